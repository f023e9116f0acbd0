"""SD3 / SD3.5 nodes (InvokeAI's sd3_*.py): model loader, text encoder, denoise, image to latents and latents
to image."""
