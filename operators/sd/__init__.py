"""Stable Diffusion 1.x/2.x/SDXL nodes: model loaders and the fields they pass (``model_loaders``,
``model_fields``), prompts (``prompts``), noise, latents and the ideal size (``latents``), denoising
(``denoise``), VAE encode and decode (``vae``), denoise masks (``masks``); ``common`` holds what they share.
The maths is in ``invokeai_provider.models.stable_diffusion`` and ``invokeai_provider.models.patches``.
"""
