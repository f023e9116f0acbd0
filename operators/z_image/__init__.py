"""Z-Image nodes: the model loader (``model_loader``), prompts (``prompts``: ``z_image_text_encoder``,
``z_image_seed_variance_enhancer``), denoising (``denoise``, ``denoise_meta``), the VAE's (``vae``: ``z_image_l2i``,
``z_image_i2l``), LoRAs (``lora_loaders``) and the ControlNet (``control``); the maths is in
``invokeai_provider.models.z_image``."""
