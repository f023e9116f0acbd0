"""FLUX.2 Klein's backend: what InvokeAI adds on top of diffusers' ``Flux2Transformer2DModel``, ``AutoencoderKLFlux2``
and transformers' Qwen3 encoder: its seeded 32-channel noise, its schedules (Klein's exponential shift with a fixed
mu for text-to-image, the plain linear one for image-to-image), latent packing and the VAE's batch-norm
normalization, the text encoding its nodes store, reference images and regional prompts, and the denoising loop
its ``flux2_denoise`` node runs. Probing and loading FLUX.2 models (diffusers folders, BFL single files) live here
too (`probe`, `loading`)."""
