"""FLUX.1 nodes: the model loader (``model_loader``), the prompt (``prompts``: ``flux_text_encoder``), denoising
(``denoise``: ``flux_denoise``) and the VAE's (``vae``: ``flux_vae_decode``, ``flux_vae_encode``); the maths is in
``invokeai_provider.models.flux``."""
