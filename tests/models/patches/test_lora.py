"""LoRA patching on tiny SD1/SDXL models: every key style applies, stacks, scales, and leaves no trace."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from safetensors.torch import save_file

from invokeai_provider.models.testing import tiny
from invokeai_provider.models.patches.lora import LoraKeyError, apply_loras, load_lora_file

STYLES = ("kohya", "diffusers", "peft")
BASES = ("sd-1", "sdxl")
PARTS = {"sd-1": ("unet", "text_encoder"), "sdxl": ("unet", "text_encoder", "text_encoder_2")}
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]
TO_K = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"  # an SD1 UNet layer every tiny LoRA patches
SDXL_TO_K = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"  # SDXL's first block has no attention


@pytest.fixture(scope="module")
def lora(tmp_dir: Path) -> Callable[..., dict[str, torch.Tensor]]:
    """Tensors of a tiny LoRA, built once per (base, style, seed)."""
    built: dict[tuple[str, str, int], dict[str, torch.Tensor]] = {}

    def get(base: str, style: str, seed: int = 0) -> dict[str, torch.Tensor]:
        if (base, style, seed) not in built:
            dest = tmp_dir / "loras" / f"{base}-{style}-{seed}{'.safetensors' if style == 'kohya' else ''}"
            built[base, style, seed] = load_lora_file(tiny.build_lora(base, dest, style=style, seed=seed))
        return built[base, style, seed]

    return get


def _output(model: torch.nn.Module, part: str) -> torch.Tensor:
    """Output on a fixed input: UNet noise prediction or text encoder last hidden state."""
    with torch.no_grad():
        if part != "unet":
            return model(torch.tensor([CAT_IDS])).last_hidden_state
        g = torch.Generator().manual_seed(0)
        config = model.config
        kwargs: dict[str, Any] = {}
        if config.addition_embed_type == "text_time":
            kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(1, 1280, generator=g),
                                           "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
        sample = torch.randn(1, 4, 8, 8, generator=g)
        context = torch.randn(1, 5, config.cross_attention_dim, generator=g)
        return model(sample, 10, encoder_hidden_states=context, **kwargs).sample


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_identical(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == snapshot.keys()
    changed = [k for k, v in state.items() if not torch.equal(v, snapshot[k])]
    assert not changed, f"weights not restored: {changed[:5]}"


def _layer_count(weights: dict[str, torch.Tensor], style: str, part: str, base: str) -> int:
    """LoRA layers of ``part`` in a tiny LoRA file (one down matrix each)."""
    if style == "kohya":
        prefix = {"unet": "lora_unet_", "text_encoder": "lora_te1_" if base == "sdxl" else "lora_te_",
                  "text_encoder_2": "lora_te2_"}[part]
        return sum(k.startswith(prefix) and k.endswith(".lora_down.weight") for k in weights)
    return sum(k.split(".")[0] == part and k.endswith((".down.weight", ".lora_A.weight")) for k in weights)


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("style", STYLES)
def test_lora_changes_outputs_and_restores_weights_exactly(sd, lora, base: str, style: str) -> None:
    weights = lora(base, style)
    for part, model in sd(base).items():
        snapshot, before = _snapshot(model), _output(model, part)
        pointers = {k: p.data_ptr() for k, p in model.named_parameters()}
        with apply_loras(model, [(weights, 1.0)], target=part, base=base) as patched:
            # Every layer of the file for this part is patched: nothing matched silently to nothing.
            assert len(patched) == _layer_count(weights, style, part, base) > 0
            during = _output(model, part)
        assert not torch.allclose(during, before, atol=1e-4), f"{part}: LoRA had no effect"
        _assert_identical(model, snapshot)
        assert {k: p.data_ptr() for k, p in model.named_parameters()} == pointers  # patched in place, not rebound
        assert torch.equal(_output(model, part), before)


@pytest.mark.parametrize("base", BASES)
def test_styles_patch_identical_weights(sd, lora, base: str) -> None:
    # The three files of one seed hold the same matrices (kohya alpha == rank), so each must land on the same layers:
    # a wrong kohya/LDM name mapping (e.g. to_k <-> to_v, same shapes) would show up here.
    for part, model in sd(base).items():
        states = []
        for style in STYLES:
            with apply_loras(model, [(lora(base, style), 1.0)], target=part, base=base):
                states.append(_snapshot(model))
        for other in states[1:]:
            assert all(torch.equal(states[0][k], other[k]) for k in states[0]), part


def test_old_diffusers_attention_processor_keys(sd, lora) -> None:
    # diffusers < 0.21 saved UNet LoRAs as attention-processor weights: ...attn2.processor.to_k_lora.down.weight.
    peft = lora("sd-1", "peft")
    old = {}
    for key, value in peft.items():
        if m := re.fullmatch(r"unet\.(.+)\.(to_q|to_k|to_v|to_out)(?:\.0)?\.lora_([AB])\.weight", key):
            module, proj, ab = m.groups()
            old[f"unet.{module}.processor.{proj}_lora.{'down' if ab == 'A' else 'up'}.weight"] = value
    assert len(old) == sum(k.startswith("unet.") for k in peft)
    unet = sd("sd-1")["unet"]
    with apply_loras(unet, [(peft, 1.0)], target="unet", base="sd-1") as expected_names:
        expected = _snapshot(unet)
    with apply_loras(unet, [(old, 1.0)], target="unet", base="sd-1") as names:
        assert names == expected_names
        assert all(torch.equal(v, expected[k]) for k, v in unet.state_dict().items())


def test_weight_zero_leaves_outputs_unchanged(sd, lora) -> None:
    for part, model in sd("sd-1").items():
        before = _output(model, part)
        with apply_loras(model, [(lora("sd-1", "kohya"), 0.0)], target=part, base="sd-1") as patched:
            assert patched == []
            assert torch.equal(_output(model, part), before)


def _fold(pairs: list[tuple[dict[str, torch.Tensor], float]]) -> dict[str, torch.Tensor]:
    """One PEFT LoRA whose delta is the weighted sum of ``pairs`` (PEFT files, no alpha): concatenated ranks."""
    out: dict[str, torch.Tensor] = {}
    for key in pairs[0][0]:
        if key.endswith(".lora_A.weight"):
            out[key] = torch.cat([w[key] for w, _ in pairs], dim=0)
        else:
            out[key] = torch.cat([w[key] * s for w, s in pairs], dim=1)
    return out


@pytest.mark.parametrize("base", BASES)
def test_two_loras_stack_like_their_summed_delta(sd, lora, base: str) -> None:
    a, b = lora(base, "peft", 0), lora(base, "peft", 1)
    folded = _fold([(a, 0.7), (b, -0.4)])
    for part, model in sd(base).items():
        with apply_loras(model, [(lora(base, "kohya", 0), 0.7), (b, -0.4)], target=part, base=base):
            stacked, out_stacked = _snapshot(model), _output(model, part)
        with apply_loras(model, [(folded, 1.0)], target=part, base=base):
            summed, out_summed = _snapshot(model), _output(model, part)
        for key, value in stacked.items():
            torch.testing.assert_close(value, summed[key], rtol=0, atol=1e-6, msg=key)
        torch.testing.assert_close(out_stacked, out_summed, rtol=1e-4, atol=1e-5)


def test_delta_is_weight_times_alpha_over_rank_times_up_down(sd, lora) -> None:
    unet = sd("sd-1")["unet"]
    key = "lora_unet_" + TO_K.replace(".", "_")
    weights = dict(lora("sd-1", "kohya"))
    rank = weights[f"{key}.lora_down.weight"].shape[0]
    weights[f"{key}.alpha"] = torch.tensor(rank / 2)
    layer = unet.get_submodule(TO_K)
    before = layer.weight.detach().clone()
    with apply_loras(unet, [(weights, 0.6)], target="unet", base="sd-1"):
        delta = layer.weight.detach() - before
    expected = 0.6 * 0.5 * weights[f"{key}.lora_up.weight"] @ weights[f"{key}.lora_down.weight"]
    torch.testing.assert_close(delta, expected, rtol=1e-4, atol=1e-6)


def test_conv_loras_3x3_and_1x1(sd) -> None:
    import torch.nn.functional as F

    unet = sd("sd-1")["unet"]
    g = torch.Generator().manual_seed(3)
    conv3 = unet.get_submodule("down_blocks.0.resnets.0.conv1")  # 3x3
    conv1 = unet.get_submodule("down_blocks.0.attentions.0.proj_in")  # 1x1: SD1 has no linear projection
    assert conv3.kernel_size == (3, 3) and conv1.kernel_size == (1, 1)
    c3_out, c3_in, c1_out, c1_in, r = conv3.out_channels, conv3.in_channels, conv1.out_channels, conv1.in_channels, 2
    down3, up3 = torch.randn(r, c3_in, 3, 3, generator=g), torch.randn(c3_out, r, 1, 1, generator=g)
    down1, up1 = torch.randn(r, c1_in, 1, 1, generator=g), torch.randn(c1_out, r, 1, 1, generator=g)
    weights = {
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": down3,
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": up3,
        "lora_unet_down_blocks_0_resnets_0_conv1.alpha": torch.tensor(1.0),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": down1,
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": up1,
    }
    x3, x1 = torch.randn(1, c3_in, 6, 6, generator=g), torch.randn(1, c1_in, 6, 6, generator=g)
    snapshot = _snapshot(unet)
    base3, base1 = F.conv2d(x3, conv3.weight, padding=1), F.conv2d(x1, conv1.weight)
    with apply_loras(unet, [(weights, 1.0)], target="unet", base="sd-1") as patched:
        assert patched == ["down_blocks.0.attentions.0.proj_in", "down_blocks.0.resnets.0.conv1"]
        # The patched conv equals the original plus the LoRA's own path: up(down(x)) (alpha 1 / rank 2 for 3x3).
        torch.testing.assert_close(F.conv2d(x3, conv3.weight, padding=1) - base3,
                                   0.5 * F.conv2d(F.conv2d(x3, down3, padding=1), up3), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(F.conv2d(x1, conv1.weight) - base1, F.conv2d(F.conv2d(x1, down1), up1),
                                   rtol=1e-4, atol=1e-4)
    _assert_identical(unet, snapshot)
    # A linear-shaped LoRA (as trained on a linear proj_in) patches the 1x1 conv the same way.
    flat = {"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": down1.flatten(1),
            "unet.down_blocks.0.attentions.0.proj_in.lora_B.weight": up1.flatten(1)}
    with apply_loras(unet, [(flat, 1.0)], target="unet", base="sd-1"):
        torch.testing.assert_close(F.conv2d(x1, conv1.weight) - base1, F.conv2d(F.conv2d(x1, down1), up1),
                                   rtol=1e-4, atol=1e-4)
    _assert_identical(unet, snapshot)


@pytest.mark.parametrize(
    "bad_key",
    [
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_z.lora_down.weight",
        "unet.down_blocks.0.attentions.0.nothing.lora_A.weight",
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.hada_w1_a",
        "lora_prior_unet_foo.lora_down.weight",
    ],
)
def test_unmatched_or_unknown_key_raises_naming_it(sd, lora, bad_key: str) -> None:
    unet = sd("sd-1")["unet"]
    snapshot = _snapshot(unet)
    weights = {**lora("sd-1", "kohya"), bad_key: torch.zeros(4, 320)}
    with pytest.raises(LoraKeyError, match=bad_key.replace(".", r"\.")):
        with apply_loras(unet, [(weights, 1.0)], target="unet", base="sd-1"):
            pytest.fail("a bad LoRA must not be applied")
    _assert_identical(unet, snapshot)


def test_other_targets_keys_are_skipped_but_checked_for_their_own_target(sd, lora) -> None:
    parts = sd("sd-1")
    bad = "lora_te_text_model_encoder_layers_0_self_attn_nothing.lora_down.weight"
    weights = {**lora("sd-1", "kohya"), bad: torch.zeros(4, 768)}
    with apply_loras(parts["unet"], [(weights, 1.0)], target="unet", base="sd-1") as patched:
        assert patched and all(not name.startswith("text_model") for name in patched)
    with pytest.raises(LoraKeyError, match="text_encoder"):
        with apply_loras(parts["text_encoder"], [(weights, 1.0)], target="text_encoder", base="sd-1"):
            pass


def test_sdxl_lora_on_sd1_model_raises(sd, lora) -> None:
    with pytest.raises(LoraKeyError, match="lora_te1_"):
        with apply_loras(sd("sd-1")["text_encoder"], [(lora("sdxl", "kohya"), 1.0)], target="text_encoder",
                         base="sd-1"):
            pass


def test_shape_mismatch_raises_before_touching_weights(sd, lora) -> None:
    unet = sd("sd-1")["unet"]
    snapshot = _snapshot(unet)
    key = "lora_unet_" + TO_K.replace(".", "_")
    weights = {**lora("sd-1", "kohya"), f"{key}.lora_down.weight": torch.zeros(4, 1024)}  # SD2-wide context
    with pytest.raises(LoraKeyError, match=key), apply_loras(unet, [(weights, 1.0)], target="unet", base="sd-1"):
        pass
    _assert_identical(unet, snapshot)


def test_weights_restored_when_the_block_raises(sd, lora) -> None:
    model = sd("sdxl")["unet"]
    snapshot = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with apply_loras(model, [(lora("sdxl", "kohya"), 1.0)], target="unet", base="sdxl"):
            assert not torch.equal(model.get_submodule(SDXL_TO_K).weight, snapshot[f"{SDXL_TO_K}.weight"])
            raise RuntimeError("boom")
    _assert_identical(model, snapshot)


def test_load_lora_file_reads_files_and_diffusers_folders(tmp_path: Path) -> None:
    tensors = {"unet.a.lora_A.weight": torch.ones(2, 3)}
    save_file(tensors, str(tmp_path / "x.safetensors"))
    (tmp_path / "folder").mkdir()
    save_file(tensors, str(tmp_path / "folder" / "pytorch_lora_weights.safetensors"))
    torch.save(tensors, tmp_path / "x.pt")
    for path in (tmp_path / "x.safetensors", tmp_path / "folder", tmp_path / "x.pt"):
        assert torch.equal(load_lora_file(path)["unet.a.lora_A.weight"], torch.ones(2, 3))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="pytorch_lora_weights"):
        load_lora_file(tmp_path / "empty")
