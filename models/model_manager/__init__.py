"""The model manager: probing files into model configs, install, the registry beside the model files,
hashing, binding model names in graphs, the disk cache and the RAM/VRAM cache, and loading (``manager``,
``core_models`` for the fixed helper models under ``<model root>/core``).
"""
