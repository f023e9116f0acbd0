"""The Stable Diffusion backend: schedulers, the denoise loop (batched across requests), the UNet/VAE/CLIP
extensions (seamless, FreeU, clip skip), the bundled diffusers architecture configs for single-file
checkpoints, the diffusers -> LDM key names, and the CLIP tokenizer built offline.
"""
