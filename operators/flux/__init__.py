"""FLUX.1 nodes. So far the VAE's (``vae``: ``flux_vae_decode``, ``flux_vae_encode``); the maths is in
``invokeai_provider.models.flux``."""
