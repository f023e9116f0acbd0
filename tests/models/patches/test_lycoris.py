"""LyCORIS layers on tiny SD1/SDXL models: each LoHa/LoKr/DoRA/full/norm update equals its formula worked out here
from the factors (by a different route than the patcher's), kohya files mixing LoRA, LoHa and LoKr patch every
layer they name, bad layers are refused by key before anything is touched, and weights come back bit for bit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from safetensors.torch import save_file

from invokeai_provider.models.patches.lora import LoraKeyError, apply_loras, load_lora_file
from invokeai_provider.models.testing.tiny_lycoris import build_lycoris_lora

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]
TO_K = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"  # Linear 768 -> 32 in the tiny SD1, no bias
TO_K_OUT = 32
TO_OUT = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"  # Linear with a bias
CONV = "down_blocks.0.resnets.0.conv1"  # 3x3 conv
NORM = "down_blocks.0.resnets.0.norm1"  # GroupNorm
SDXL_TO_K = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
SDXL_TO_K_SGM = "input_blocks_4_1_transformer_blocks_0_attn2_to_k"  # kohya's name for it in SDXL files


def kohya(module: str) -> str:
    return "lora_unet_" + module.replace(".", "_")


@pytest.fixture(scope="module")
def lycoris(tmp_dir: Path) -> Callable[[str, str], dict[str, torch.Tensor]]:
    built: dict[tuple[str, str], dict[str, torch.Tensor]] = {}

    def get(base: str, kind: str) -> dict[str, torch.Tensor]:
        if (base, kind) not in built:
            path = build_lycoris_lora(base, tmp_dir / "loras" / f"{base}-{kind}.safetensors", kind=kind)
            built[base, kind] = load_lora_file(path)
        return built[base, kind]

    return get


def _output(model: torch.nn.Module, part: str) -> torch.Tensor:
    with torch.no_grad():
        if part != "unet":
            return model(torch.tensor([CAT_IDS])).last_hidden_state
        g = torch.Generator().manual_seed(0)
        kwargs: dict[str, Any] = {}
        if model.config.addition_embed_type == "text_time":
            kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(1, 1280, generator=g),
                                           "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
        sample = torch.randn(1, 4, 8, 8, generator=g)
        context = torch.randn(1, 5, model.config.cross_attention_dim, generator=g)
        return model(sample, 10, encoder_hidden_states=context, **kwargs).sample


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_identical(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, snapshot[k])]
    assert not changed, f"weights not restored: {changed[:5]}"


def _deltas(model: torch.nn.Module, module: str, loras: list[tuple[dict[str, torch.Tensor], float]],
            target: str = "unet", base: str = "sd-1") -> dict[str, torch.Tensor]:
    """How the module's parameters change under the LoRAs (float64), checking they come back exactly after."""
    layer = model.get_submodule(module)
    snapshot = _snapshot(model)
    before = {name: p.detach().double().clone() for name, p in layer.named_parameters()}
    with apply_loras(model, loras, target=target, base=base) as patched:
        assert module in patched
        after = {name: p.detach().double().clone() for name, p in layer.named_parameters()}
    _assert_identical(model, snapshot)
    return {name: after[name] - before[name] for name in before if not torch.equal(after[name], before[name])}


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


# --- references, built another way than the patcher (loops and tensordot, float64) ---------------------------


def kron_reference(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The Kronecker product block by block: block (i, j) is ``w1[i, j] * w2`` (w2 may be a 4-D kernel)."""
    a, b = w1.shape[:2]
    c, d = w2.shape[:2]
    out = torch.zeros(a * c, b * d, *w2.shape[2:], dtype=torch.float64)
    for i in range(a):
        for j in range(b):
            out[i * c:(i + 1) * c, j * d:(j + 1) * d] = w1[i, j].double() * w2.double()
    return out


def tucker_reference(core: torch.Tensor, out_factor: torch.Tensor, in_factor: torch.Tensor) -> torch.Tensor:
    """LyCORIS' Tucker rebuild for a conv kernel: ``out[p, r, k, l] = sum_ij core[i, j, k, l] out_f[i, p] in_f[j, r]``
    (both factors stored rank-first), by two tensordots."""
    step = torch.tensordot(out_factor.double().T, core.double(), dims=([1], [0]))  # p j k l
    return torch.tensordot(step, in_factor.double(), dims=([1], [0])).permute(0, 3, 1, 2)  # p k l r -> p r k l


# --- LoHa -----------------------------------------------------------------------------------------------------


def test_loha_linear_delta_is_weight_times_scale_times_hadamard_product(sd) -> None:
    unet, g = sd("sd-1")["unet"], torch.Generator().manual_seed(1)
    assert unet.get_submodule(TO_K).weight.shape == (TO_K_OUT, 768)  # the shapes the tests below build for
    w1_a, w1_b = _randn(g, TO_K_OUT, 4), _randn(g, 4, 768, scale=0.1)
    w2_a, w2_b = _randn(g, TO_K_OUT, 4), _randn(g, 4, 768)
    key = kohya(TO_K)
    weights = {f"{key}.hada_w1_a": w1_a, f"{key}.hada_w1_b": w1_b, f"{key}.hada_w2_a": w2_a,
               f"{key}.hada_w2_b": w2_b, f"{key}.alpha": torch.tensor(3.0)}
    deltas = _deltas(unet, TO_K, [(weights, 0.7)])
    hadamard = (w1_a.double() @ w1_b.double()) * (w2_a.double() @ w2_b.double())
    torch.testing.assert_close(deltas["weight"], 0.7 * (3.0 / 4) * hadamard, rtol=1e-4, atol=1e-6)
    assert set(deltas) == {"weight"}


def test_loha_conv_plain_and_tucker(sd) -> None:
    unet, g = sd("sd-1")["unet"], torch.Generator().manual_seed(2)
    conv = unet.get_submodule(CONV)
    out_ch, in_ch, rank = conv.out_channels, conv.in_channels, 2
    key = kohya(CONV)
    # plain: the b factors hold whole flattened kernels (rank, in * 3 * 3)
    plain = {f"{key}.hada_w1_a": _randn(g, out_ch, rank, scale=0.2), f"{key}.hada_w1_b": _randn(g, rank, in_ch * 9),
             f"{key}.hada_w2_a": _randn(g, out_ch, rank), f"{key}.hada_w2_b": _randn(g, rank, in_ch * 9)}
    expected = ((plain[f"{key}.hada_w1_a"].double() @ plain[f"{key}.hada_w1_b"].double())
                * (plain[f"{key}.hada_w2_a"].double() @ plain[f"{key}.hada_w2_b"].double()))
    torch.testing.assert_close(_deltas(unet, CONV, [(plain, 1.0)])["weight"], expected.reshape(conv.weight.shape),
                               rtol=1e-4, atol=1e-6)
    # Tucker: cores (rank, rank, 3, 3) and rank-first factors (rank, out) / (rank, in)
    t1, t2 = _randn(g, rank, rank, 3, 3), _randn(g, rank, rank, 3, 3)
    w1_a, w1_b = _randn(g, rank, out_ch, scale=0.2), _randn(g, rank, in_ch)
    w2_a, w2_b = _randn(g, rank, out_ch), _randn(g, rank, in_ch)
    tucker = {f"{key}.hada_t1": t1, f"{key}.hada_t2": t2, f"{key}.hada_w1_a": w1_a, f"{key}.hada_w1_b": w1_b,
              f"{key}.hada_w2_a": w2_a, f"{key}.hada_w2_b": w2_b, f"{key}.alpha": torch.tensor(1.0)}
    expected = tucker_reference(t1, w1_a, w1_b) * tucker_reference(t2, w2_a, w2_b) * 0.5  # alpha 1 / rank 2
    delta = _deltas(unet, CONV, [(tucker, 1.0)])["weight"]
    assert delta.shape == (out_ch, in_ch, 3, 3)
    torch.testing.assert_close(delta, expected, rtol=1e-4, atol=1e-6)


# --- LoKr -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["w1 whole, w2 factored", "w1 factored, w2 whole", "both whole"])
def test_lokr_linear_delta_is_the_kronecker_product(sd, form: str) -> None:
    unet, g = sd("sd-1")["unet"], torch.Generator().manual_seed(3)
    key, rank = kohya(TO_K), 4
    w1_a, w1_b = _randn(g, 4, rank), _randn(g, rank, 8)  # w1: 4 x 8
    w2_a, w2_b = _randn(g, TO_K_OUT // 4, rank, scale=0.1), _randn(g, rank, 96)  # w2: 8 x 96 -> 32 x 768
    w1, w2 = w1_a @ w1_b, w2_a @ w2_b
    weights: dict[str, torch.Tensor] = {f"{key}.alpha": torch.tensor(2.0)}
    if form == "w1 whole, w2 factored":
        weights |= {f"{key}.lokr_w1": w1, f"{key}.lokr_w2_a": w2_a, f"{key}.lokr_w2_b": w2_b}
        scale = 2.0 / rank  # rank: w2_b's
    elif form == "w1 factored, w2 whole":
        weights |= {f"{key}.lokr_w1_a": w1_a, f"{key}.lokr_w1_b": w1_b, f"{key}.lokr_w2": w2}
        scale = 2.0 / rank  # rank: w1_b's
    else:
        weights |= {f"{key}.lokr_w1": w1, f"{key}.lokr_w2": w2}
        scale = 1.0  # no factored side, no rank: alpha is not used
    delta = _deltas(unet, TO_K, [(weights, -0.6)])["weight"]
    torch.testing.assert_close(delta, -0.6 * scale * kron_reference(w1, w2), rtol=1e-4, atol=1e-6)


def test_lokr_tucker_conv(sd) -> None:
    unet, g = sd("sd-1")["unet"], torch.Generator().manual_seed(4)
    conv = unet.get_submodule(CONV)
    out_ch, in_ch, rank = conv.out_channels, conv.in_channels, 3
    key = kohya(CONV)
    w1 = _randn(g, 2, 4)
    t2, w2_a, w2_b = _randn(g, rank, rank, 3, 3), _randn(g, rank, out_ch // 2, scale=0.1), _randn(g, rank, in_ch // 4)
    weights = {f"{key}.lokr_w1": w1, f"{key}.lokr_t2": t2, f"{key}.lokr_w2_a": w2_a, f"{key}.lokr_w2_b": w2_b,
               f"{key}.alpha": torch.tensor(1.5)}
    delta = _deltas(unet, CONV, [(weights, 1.0)])["weight"]
    expected = kron_reference(w1, tucker_reference(t2, w2_a, w2_b)) * (1.5 / rank)
    assert expected.shape == conv.weight.shape
    torch.testing.assert_close(delta, expected, rtol=1e-4, atol=1e-6)


# --- whole files ----------------------------------------------------------------------------------------------


def _layer_count(weights: dict[str, torch.Tensor], part: str, base: str) -> int:
    prefix = {"unet": "lora_unet_", "text_encoder": "lora_te1_" if base == "sdxl" else "lora_te_",
              "text_encoder_2": "lora_te2_"}[part]
    return len({k.split(".")[0] for k in weights if k.startswith(prefix)})


@pytest.mark.parametrize("base", ["sd-1", "sdxl"])
@pytest.mark.parametrize("kind", ["loha", "lokr", "mixed"])
def test_lycoris_files_patch_every_layer_change_outputs_and_restore_exactly(sd, lycoris, base: str,
                                                                            kind: str) -> None:
    weights = lycoris(base, kind)
    if kind == "mixed":
        roles = {k.split(".", 1)[1] for k in weights}
        assert {"lora_down.weight", "hada_w1_a", "lokr_w1", "lokr_w1_a", "lokr_w2", "lokr_w2_a"} <= roles
    for part, model in sd(base).items():
        snapshot, before = _snapshot(model), _output(model, part)
        pointers = {k: p.data_ptr() for k, p in model.named_parameters()}
        with apply_loras(model, [(weights, 1.0)], target=part, base=base) as patched:
            assert len(patched) == _layer_count(weights, part, base) > 0
            during = _output(model, part)
        assert not torch.allclose(during, before, atol=1e-4), f"{part}: {kind} had no effect"
        _assert_identical(model, snapshot)
        assert {k: p.data_ptr() for k, p in model.named_parameters()} == pointers
        assert torch.equal(_output(model, part), before)


def test_sdxl_kohya_loha_lands_on_the_sgm_named_layer(sd, lycoris) -> None:
    weights = lycoris("sdxl", "loha")
    key = f"lora_unet_{SDXL_TO_K_SGM}"
    parts = {role: weights[f"{key}.{role}"].double() for role in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")}
    scale = float(weights[f"{key}.alpha"]) / parts["hada_w1_b"].shape[0]
    expected = (parts["hada_w1_a"] @ parts["hada_w1_b"]) * (parts["hada_w2_a"] @ parts["hada_w2_b"]) * scale
    delta = _deltas(sd("sdxl")["unet"], SDXL_TO_K, [(weights, 1.0)], base="sdxl")["weight"]
    torch.testing.assert_close(delta, expected, rtol=1e-4, atol=1e-6)


def test_lora_and_lycoris_files_stack_and_weight_zero_is_no_patch(sd, lycoris) -> None:
    unet = sd("sd-1")["unet"]
    loha, lokr = lycoris("sd-1", "loha"), lycoris("sd-1", "lokr")
    alone = {name: _deltas(unet, TO_K, [(w, s)])["weight"] for name, w, s in (("loha", loha, 0.5), ("lokr", lokr, 2))}
    both = _deltas(unet, TO_K, [(loha, 0.5), (lokr, 2.0), (lycoris("sd-1", "mixed"), 0.0)])["weight"]
    torch.testing.assert_close(both, alone["loha"] + alone["lokr"], rtol=1e-4, atol=1e-6)
    before = _output(unet, "unet")
    with apply_loras(unet, [(loha, 0.0), (lokr, 0.0)], target="unet", base="sd-1") as patched:
        assert patched == []
        assert torch.equal(_output(unet, "unet"), before)


# --- full, norm, DoRA, LoCon Tucker, sparse bias ---------------------------------------------------------------


def test_full_diff_and_norm_layers_add_their_tensors(sd) -> None:
    unet, g = sd("sd-1")["unet"], torch.Generator().manual_seed(5)
    linear, norm = unet.get_submodule(TO_OUT), unet.get_submodule(NORM)
    diff, diff_b = _randn(g, *linear.weight.shape, scale=0.01), _randn(g, *linear.bias.shape)
    w_norm, b_norm = _randn(g, *norm.weight.shape), _randn(g, *norm.bias.shape)
    weights = {f"{kohya(TO_OUT)}.diff": diff, f"{kohya(TO_OUT)}.diff_b": diff_b,
               f"{kohya(NORM)}.w_norm": w_norm, f"{kohya(NORM)}.b_norm": b_norm}
    full = _deltas(unet, TO_OUT, [(weights, 0.5)])
    torch.testing.assert_close(full["weight"], 0.5 * diff.double(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(full["bias"], 0.5 * diff_b.double(), rtol=1e-4, atol=1e-6)
    normed = _deltas(unet, NORM, [(weights, 0.5)])
    torch.testing.assert_close(normed["weight"], 0.5 * w_norm.double(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(normed["bias"], 0.5 * b_norm.double(), rtol=1e-4, atol=1e-6)


def test_dora_renormalises_columns_and_sees_earlier_loras(sd) -> None:
    unet, g = sd("sd-1")["unet"], torch.Generator().manual_seed(6)
    key, rank = kohya(TO_K), 4
    W = unet.get_submodule(TO_K).weight.detach().double().clone()
    up, down = _randn(g, TO_K_OUT, rank, scale=0.05), _randn(g, rank, 768, scale=0.05)
    magnitude = _randn(g, 1, 768).abs() + 0.5
    dora = {f"{key}.lora_up.weight": up, f"{key}.lora_down.weight": down, f"{key}.dora_scale": magnitude,
            f"{key}.alpha": torch.tensor(2.0)}

    def expected(base_weight: torch.Tensor, multiplier: float) -> torch.Tensor:
        patched = base_weight + (2.0 / rank) * (up.double() @ down.double())
        norms = torch.sqrt((patched**2).sum(dim=0, keepdim=True))  # one norm per input column
        return multiplier * (patched * magnitude.double() / norms - base_weight)

    torch.testing.assert_close(_deltas(unet, TO_K, [(dora, 0.8)])["weight"], expected(W, 0.8), rtol=1e-4, atol=1e-5)
    # listed after a plain LoRA, DoRA renormalises the weight that LoRA left (InvokeAI's order of application)
    lora_up, lora_down = _randn(g, TO_K_OUT, 2, scale=0.05), _randn(g, 2, 768, scale=0.05)
    lora = {f"{key}.lora_up.weight": lora_up, f"{key}.lora_down.weight": lora_down}
    first = lora_up.double() @ lora_down.double()
    torch.testing.assert_close(_deltas(unet, TO_K, [(lora, 1.0), (dora, 1.0)])["weight"],
                               first + expected(W + first, 1.0), rtol=1e-4, atol=1e-5)


def test_locon_tucker_mid_and_a_sparse_bias(sd) -> None:
    unet, g = sd("sd-1")["unet"], torch.Generator().manual_seed(7)
    conv = unet.get_submodule(CONV)
    key, rank = kohya(CONV), 2
    mid, up, down = _randn(g, rank, rank, 3, 3), _randn(g, conv.out_channels, rank, 1, 1, scale=0.1), \
        _randn(g, rank, conv.in_channels, 1, 1)
    indices = torch.tensor([[0, 5, 5]])
    values = torch.tensor([1.0, 2.0, 0.5])
    weights = {f"{key}.lora_mid.weight": mid, f"{key}.lora_up.weight": up, f"{key}.lora_down.weight": down,
               f"{key}.alpha": torch.tensor(1.0), f"{key}.bias_indices": indices, f"{key}.bias_values": values,
               f"{key}.bias_size": torch.tensor([conv.out_channels])}
    deltas = _deltas(unet, CONV, [(weights, 1.0)])
    # mid is stored (rank_out, rank_in, k, k): up's side first, like LyCORIS' LoCon
    expected = torch.einsum("ijkl,pi,jr->prkl", mid.double(), up.flatten(1).double(), down.flatten(1).double())
    torch.testing.assert_close(deltas["weight"], 0.5 * expected, rtol=1e-4, atol=1e-6)
    bias = torch.zeros(conv.out_channels, dtype=torch.float64)
    bias[0], bias[5] = 1.0, 2.5  # repeated indices add up
    torch.testing.assert_close(deltas["bias"], 0.5 * bias, rtol=1e-6, atol=1e-7)


# --- refusals -------------------------------------------------------------------------------------------------


def _loha(key: str, out: int, fan_in: int) -> dict[str, torch.Tensor]:
    return {f"{key}.hada_w1_a": torch.ones(out, 2), f"{key}.hada_w1_b": torch.ones(2, fan_in),
            f"{key}.hada_w2_a": torch.ones(out, 2), f"{key}.hada_w2_b": torch.ones(2, fan_in)}


K, N = kohya(TO_K), kohya(NORM)
BAD = {
    "lacks hada_w2_b": {k: v for k, v in _loha(K, TO_K_OUT, 768).items() if not k.endswith("w2_b")},
    "lacks hada_t2": {**_loha(K, TO_K_OUT, 768), f"{K}.hada_t1": torch.ones(2, 2, 1, 1)},
    "do not fit": {f"{K}.lokr_w1": torch.ones(4, 8), f"{K}.lokr_w2": torch.ones(TO_K_OUT // 4, 95)},
    "do not combine": {**_loha(K, TO_K_OUT, 768), f"{K}.hada_w2_b": torch.ones(3, 768)},
    "either lokr_w1 or both": {f"{K}.lokr_w1": torch.ones(4, 8), f"{K}.lokr_w1_a": torch.ones(4, 2),
                               f"{K}.lokr_w1_b": torch.ones(2, 8), f"{K}.lokr_w2": torch.ones(TO_K_OUT // 4, 96)},
    "DoRA scale": {**_loha(K, TO_K_OUT, 768), f"{K}.dora_scale": torch.ones(1, 768)},
    "IA3": {f"{K}.on_input": torch.tensor(True), f"{K}.weight": torch.ones(768)},
    "mixes lora factors with hada": {**_loha(K, TO_K_OUT, 768), f"{K}.lora_up.weight": torch.ones(TO_K_OUT, 2),
                                     f"{K}.lora_down.weight": torch.ones(2, 768)},
    "1-D": _loha(N, 32, 1),
    "without a bias": {f"{K}.diff": torch.ones(TO_K_OUT, 768), f"{K}.diff_b": torch.ones(TO_K_OUT)},
    "expected one value per input": {f"{K}.lora_up.weight": torch.ones(TO_K_OUT, 2), f"{K}.lora_down.weight":
                                     torch.ones(2, 768), f"{K}.dora_scale": torch.ones(TO_K_OUT, 1)},
}


@pytest.mark.parametrize("reason", list(BAD))
def test_bad_lycoris_layers_are_refused_by_key_before_any_weight_changes(sd, lycoris, reason: str) -> None:
    unet = sd("sd-1")["unet"]
    snapshot = _snapshot(unet)
    bad = BAD[reason]
    stems = {key.split(".")[0] for key in bad}
    good = {k: v for k, v in lycoris("sd-1", "mixed").items() if k.split(".")[0] not in stems}
    weights = {**good, **bad}  # the good layers come first: nothing may be patched
    with pytest.raises(LoraKeyError) as caught:
        with apply_loras(unet, [(weights, 1.0)], target="unet", base="sd-1"):
            pytest.fail("a bad layer must not be applied")
    message = str(caught.value)
    assert reason in message and any(key in message for key in bad), message
    _assert_identical(unet, snapshot)


# --- probing --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["sd-1", "sd-2", "sdxl"])
@pytest.mark.parametrize("kind", ["loha", "lokr", "mixed"])
def test_lycoris_files_probe_as_lora_of_their_base(tmp_path: Path, base: str, kind: str) -> None:
    from invokeai_provider.core.taxonomy import BaseModelType, ModelType
    from invokeai_provider.models.model_manager.configs import ModelFormat
    from invokeai_provider.models.model_manager.probe import probe_file

    result = probe_file(build_lycoris_lora(base, tmp_path / "l.safetensors", kind=kind))
    assert (result.type, result.format, result.base) == (ModelType.LoRA, ModelFormat.LyCORIS, BaseModelType(base))


@pytest.mark.parametrize(("width", "base"), [(768, "sd-1"), (1024, "sd-2")])
def test_a_lokr_of_whole_factors_probes_by_their_product_width(tmp_path: Path, width: int, base: str) -> None:
    from invokeai_provider.models.model_manager.probe import probe_file

    key = kohya(TO_K)
    path = tmp_path / "lokr.safetensors"
    save_file({f"{key}.lokr_w1": torch.zeros(4, 8), f"{key}.lokr_w2": torch.zeros(8, width // 8)}, str(path))
    assert probe_file(path).base.value == base
