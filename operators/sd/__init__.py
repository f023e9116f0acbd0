"""Stable Diffusion 1.x/2.x/SDXL nodes: model loaders and the fields they pass, prompts, noise and latents,
denoising, VAE encode and decode, denoise masks. The maths is in ``invokeai_provider.models.stable_diffusion``.
"""
