"""FLUX.1's backend: what InvokeAI adds on top of diffusers' ``FluxTransformer2DModel``, ``AutoencoderKL`` and
transformers' CLIP-L and T5 encoders: InvokeAI's seeded noise, its timestep schedules, latent packing, the text
encoding its nodes store, and the denoising loop its ``flux_denoise`` node runs."""
