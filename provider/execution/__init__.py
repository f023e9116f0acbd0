"""What a compiled task runs: one plan task's nodes in this process or in the GPU runtime, the instances of
mapped tasks, tenants and usage records. ``runtime/`` is the per-GPU runtime process.
"""
