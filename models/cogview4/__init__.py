"""CogView4's backend: what InvokeAI adds on top of diffusers' ``CogView4Transformer2DModel`` and ``AutoencoderKL``
and transformers' ``GlmModel``: its seeded noise and timestep/sigma schedule (`sampling`), the GLM prompt encoding
its text encoder node stores (`text_encoding`), the denoising loop of ``cogview4_denoise`` (`denoise_loop`), the
VAE's scaling (`vae`) and how a CogView4 folder is identified (`probe`)."""
