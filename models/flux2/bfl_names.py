"""Black Forest Labs' FLUX.2 layer names and diffusers' ``Flux2Transformer2DModel`` names for the same layers: what
BFL-named (ai-toolkit, kohya, ComfyUI) FLUX.2 LoRAs are renamed with.

FLUX.2 differs from FLUX.1 in ways that change the table: a double block's MLPs are SwiGLU (``linear_in`` /
``linear_out``), the modulations are three layers shared by all blocks instead of one per block, and a single
block's ``linear1`` stays fused in diffusers too (``to_qkv_mlp_proj``); the double blocks' ``qkv`` is still split into
``to_q``/``to_k``/``to_v``."""

from __future__ import annotations

from invokeai_provider.models.flux.bfl_names import BflNames

FLUX2_NAMES = BflNames(
    double_block={
        "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
        "img_attn.proj": ("attn.to_out.0",),
        "img_mlp.0": ("ff.linear_in",),
        "img_mlp.2": ("ff.linear_out",),
        "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
        "txt_attn.proj": ("attn.to_add_out",),
        "txt_mlp.0": ("ff_context.linear_in",),
        "txt_mlp.2": ("ff_context.linear_out",),
    },
    single_block={"linear1": ("attn.to_qkv_mlp_proj",), "linear2": ("attn.to_out",)},
    top_level={
        "img_in": "x_embedder",
        "txt_in": "context_embedder",
        "time_in.in_layer": "time_guidance_embed.timestep_embedder.linear_1",
        "time_in.out_layer": "time_guidance_embed.timestep_embedder.linear_2",
        "guidance_in.in_layer": "time_guidance_embed.guidance_embedder.linear_1",
        "guidance_in.out_layer": "time_guidance_embed.guidance_embedder.linear_2",
        "double_stream_modulation_img.lin": "double_stream_modulation_img.linear",
        "double_stream_modulation_txt.lin": "double_stream_modulation_txt.linear",
        "single_stream_modulation.lin": "single_stream_modulation.linear",
        "final_layer.linear": "proj_out",
        "final_layer.adaLN_modulation.1": "norm_out.linear",
    },
)
# the RMS norm scales (BFL parameter -> diffusers parameter), per double and single block
DOUBLE_BLOCK_NORMS: dict[str, str] = {
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight", "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}
SINGLE_BLOCK_NORMS: dict[str, str] = {"norm.query_norm.scale": "attn.norm_q.weight",
                                      "norm.key_norm.scale": "attn.norm_k.weight"}
# layers only FLUX.2 has, and the SwiGLU MLP's width over the block's (FLUX.1's plain MLP is 4x): what tells a
# BFL-named FLUX.2 LoRA from a FLUX.1 one whatever its size
SHARED_MODULATIONS = ("double_stream_modulation_img.lin", "double_stream_modulation_txt.lin",
                      "single_stream_modulation.lin")
FLUX1_ONLY = (".img_mod.lin", ".txt_mod.lin", ".modulation.lin", "vector_in.")
