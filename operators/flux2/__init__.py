"""FLUX.2 Klein nodes: the model loader (``model_loader``: ``flux2_klein_model_loader``), the prompt (``prompts``:
``flux2_klein_text_encoder``), denoising (``denoise``: ``flux2_denoise``), the VAE's (``vae``: ``flux2_vae_encode``,
``flux2_vae_decode``) and the LoRA loaders (``lora_loaders``); the maths is in ``invokeai_provider.models.flux2``."""
