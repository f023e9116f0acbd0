"""FLUX.1 LyCORIS LoRAs: LoHa and LoKr layers on BFL's fused layers (``qkv``, ``linear1``) land on diffusers' split
layers as the rows of the whole update, the final layer's halves swap, single layers and diffusers-named files pass
through, and a DoRA scale on a fused layer is refused by key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from invokeai_provider.models.flux.lora_conversion import flux_lora_format, to_diffusers_names
from invokeai_provider.models.patches.lora import apply_loras
from invokeai_provider.models.testing.tiny_flux import flux_components
from invokeai_provider.models.testing.tiny_lycoris import loha_factors, lokr_factors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDTH = 32  # the tiny transformer's hidden size
QKV = ("attn.to_q", "attn.to_k", "attn.to_v")


@pytest.fixture(scope="module")
def transformer() -> Any:
    return flux_components("dev", seed=1)["transformer"]


def deltas(transformer: Any, lora: dict[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
    """The changed transformer weights (float64 differences), checked to come back bit for bit afterwards."""
    before = {k: v.detach().clone() for k, v in transformer.state_dict().items()}
    with apply_loras(transformer, [(to_diffusers_names(lora), weight)], target="transformer", base="flux"):
        after = {k: v.detach().clone() for k, v in transformer.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in transformer.state_dict().items())
    return {k: after[k].double() - before[k].double() for k in before if not torch.equal(after[k], before[k])}


def loha_update(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    return ((parts["hada_w1_a"].double() @ parts["hada_w1_b"].double())
            * (parts["hada_w2_a"].double() @ parts["hada_w2_b"].double()))


def lokr_update(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    w1 = parts["lokr_w1"].double() if "lokr_w1" in parts else parts["lokr_w1_a"].double() @ parts["lokr_w1_b"].double()
    w2 = parts["lokr_w2"].double() if "lokr_w2" in parts else parts["lokr_w2_a"].double() @ parts["lokr_w2_b"].double()
    return torch.cat([torch.cat([w1[i, j] * w2 for j in range(w1.shape[1])], dim=1) for i in range(w1.shape[0])])


def layer(prefix: str, parts: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    return {**{f"{prefix}.{role}": t for role, t in parts.items()}, f"{prefix}.alpha": torch.tensor(alpha)}


def test_kohya_loha_and_lokr_split_fused_layers_by_rows(transformer: Any) -> None:
    g = torch.Generator().manual_seed(0)
    qkv = lokr_factors(3 * WIDTH, WIDTH, 4, g, factored_w1=False)  # w1 2x2, w2 48x16: blocks straddle q/k/v
    linear1 = loha_factors(3 * WIDTH + 4 * WIDTH, WIDTH, 4, g)
    proj = lokr_factors(WIDTH, WIDTH, 2, g, factored_w1=True)
    txt_qkv = loha_factors(3 * WIDTH, WIDTH, 2, g)
    lora = {**layer("lora_unet_double_blocks_0_img_attn_qkv", qkv, 2.0),
            **layer("lora_unet_single_blocks_0_linear1", linear1, 4.0),
            **layer("lora_unet_double_blocks_0_img_attn_proj", proj, 1.0),
            **layer("lora_unet_double_blocks_0_txt_attn_qkv", txt_qkv, 1.0)}
    assert flux_lora_format(lora) == "kohya"
    changed = deltas(transformer, lora, 0.8)

    def expect(name: str, update: torch.Tensor) -> None:
        torch.testing.assert_close(changed.pop(f"{name}.weight"), update, rtol=1e-4, atol=1e-6, msg=name)

    whole = lokr_update(qkv) * 0.8 * (2.0 / 4)
    for i, target in enumerate(QKV):
        expect(f"transformer_blocks.0.{target}", whole[i * WIDTH:(i + 1) * WIDTH])
    whole = loha_update(linear1) * 0.8 * (4.0 / 4)
    for i, target in enumerate(QKV):
        expect(f"single_transformer_blocks.0.{target}", whole[i * WIDTH:(i + 1) * WIDTH])
    expect("single_transformer_blocks.0.proj_mlp", whole[3 * WIDTH:])
    expect("transformer_blocks.0.attn.to_out.0", lokr_update(proj) * 0.8 * (1.0 / 2))
    whole = loha_update(txt_qkv) * 0.8 * (1.0 / 2)
    for i, target in enumerate(("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")):
        expect(f"transformer_blocks.0.{target}", whole[i * WIDTH:(i + 1) * WIDTH])
    assert not changed, f"unexpected layers patched: {sorted(changed)}"


def test_final_layer_halves_swap_and_diffusers_names_pass_through(transformer: Any) -> None:
    g = torch.Generator().manual_seed(1)
    final = lokr_factors(2 * WIDTH, WIDTH, 2, g, factored_w1=False)
    block = loha_factors(WIDTH, WIDTH, 2, g)
    aitoolkit = {**layer("diffusion_model.final_layer.adaLN_modulation.1", final, 2.0),
                 **layer("diffusion_model.double_blocks.0.img_attn.proj", block, 2.0)}
    assert flux_lora_format(aitoolkit) == "aitoolkit"
    changed = deltas(transformer, aitoolkit, 1.0)
    whole = lokr_update(final)
    torch.testing.assert_close(changed.pop("norm_out.linear.weight"), torch.cat([whole[WIDTH:], whole[:WIDTH]]),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(changed.pop("transformer_blocks.0.attn.to_out.0.weight"), loha_update(block),
                               rtol=1e-4, atol=1e-6)
    assert not changed
    diffusers = layer("transformer.single_transformer_blocks.0.attn.to_q", block, 2.0)
    assert flux_lora_format(diffusers) == "diffusers"
    torch.testing.assert_close(deltas(transformer, diffusers, 0.5)["single_transformer_blocks.0.attn.to_q.weight"],
                               0.5 * loha_update(block), rtol=1e-4, atol=1e-6)


def test_dora_on_a_fused_layer_is_refused_by_key_and_passes_through_on_a_single_one(transformer: Any) -> None:
    g = torch.Generator().manual_seed(2)

    def dora(prefix: str, rows: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.lora_down.weight": torch.randn(2, WIDTH, generator=g) * 0.1,
                f"{prefix}.lora_up.weight": torch.randn(rows, 2, generator=g) * 0.1,
                f"{prefix}.dora_scale": torch.rand(1, WIDTH, generator=g) + 0.5}

    with pytest.raises(ValueError, match="lora_unet_double_blocks_0_img_attn_qkv.*DoRA scale"):
        to_diffusers_names(dora("lora_unet_double_blocks_0_img_attn_qkv", 3 * WIDTH))
    changed = deltas(transformer, dora("lora_unet_double_blocks_0_img_attn_proj", WIDTH), 1.0)
    assert set(changed) == {"transformer_blocks.0.attn.to_out.0.weight"}


def test_a_kohya_lycoris_flux_file_probes_as_a_flux_lora(tmp_path: Path) -> None:
    from invokeai_provider.models.model_manager.probe import probe_file

    g = torch.Generator().manual_seed(3)
    path = tmp_path / "lokr.safetensors"
    save_file(layer("lora_unet_double_blocks_0_img_attn_qkv", lokr_factors(9216, 3072, 8, g, factored_w1=False),
                    8.0), str(path))
    result = probe_file(path)
    assert (result.type.value, result.format.value, result.base.value) == ("lora", "lycoris", "flux")
