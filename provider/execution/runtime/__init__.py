"""The GPU runtime: a long-lived process per GPU that owns the model cache and runs the GPU segments that
tasks hand it over a local socket (server), the task side (client), their wire format (protocol), and
the batching of denoise work across tasks.
"""
