"""Backends: what nodes run, with no Airflow and no node classes in it.

``model_manager/`` (probe, install, registry, caches, loading), ``patches/`` (LoRA, embeddings), one
sub-package per model family (``stable_diffusion/``), ``annotators/`` and ``upscalers/`` (networks),
``image_util/`` (colour, watermark, tiling) and ``testing/`` (tiny models). Imports run one way: the node
families (the ``operators/`` folder) import these; nothing here imports the nodes or the Airflow side.
"""
