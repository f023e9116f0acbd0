"""FLUX.1 nodes. So far the model loader (``model_loader``: ``flux_model_loader``) and the VAE's (``vae``:
``flux_vae_decode``, ``flux_vae_encode``); the maths is in ``invokeai_provider.models.flux``."""
