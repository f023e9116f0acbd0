"""The Stable Diffusion backend: schedulers, the denoise loop (batched across requests), the bundled
diffusers architecture configs for single-file checkpoints, and the UNet/VAE extensions (seamless, FreeU).
"""
