"""CogView4 nodes: the model loader (``model_loader``: ``cogview4_model_loader``), the prompt (``prompts``:
``cogview4_text_encoder``), denoising (``denoise``: ``cogview4_denoise``) and the VAE's (``vae``: ``cogview4_l2i``,
``cogview4_i2l``); the maths is in ``invokeai_provider.models.cogview4``."""
