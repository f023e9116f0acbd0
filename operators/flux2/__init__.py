"""FLUX.2 nodes: the model loaders (``model_loader``: ``flux2_klein_model_loader``; ``dev_model_loader``:
``flux2_dev_model_loader``), the prompts (``prompts``: ``flux2_klein_text_encoder``, ``flux2_dev_text_encoder``),
denoising (``denoise``: ``flux2_denoise``), the VAE's (``vae``: ``flux2_vae_encode``, ``flux2_vae_decode``) and the
LoRA loaders (``lora_loaders``: Klein's and [dev]'s); the maths is in ``invokeai_provider.models.flux2``."""
