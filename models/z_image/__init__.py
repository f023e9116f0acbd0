"""Z-Image's backend: what InvokeAI adds on top of diffusers' ``ZImageTransformer2DModel``, ``AutoencoderKL`` (FLUX's
VAE) and transformers' Qwen3 encoder: its seeded noise and shifted sigmas (`sampling`), the prompt embeddings its
nodes store (`text_encoding`), the denoising loop (`denoise_loop`), probing and loading of its models (`probe`,
`loading`), its LoRA formats (`lora_conversion`) and ControlNets (`control`)."""
