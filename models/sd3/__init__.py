"""SD3 / SD3.5's backend: what InvokeAI's SD3 nodes add around diffusers' ``SD3Transformer2DModel`` and
``AutoencoderKL`` and transformers' CLIP-L, CLIP-G and T5 encoders: probing its models, the prompt encoding its
nodes store, its seeded noise and unshifted schedule, and the CFG denoising loop."""
