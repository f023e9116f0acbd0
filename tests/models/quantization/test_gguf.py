"""GGUF models: each kind the provider loads (FLUX.1, FLUX.2 Klein and Z-Image transformers, Qwen3 and T5 encoders)
probed, installed and loaded through the model manager with its linear weights still quantized; the FLUX.1
transformer converted on its quantized rows against the file dequantized first; the Qwen3 and T5 encoders against the
same file dequantized by the ``gguf`` package itself; the tiny GGUF T5 installed with its tokenizer as its --config,
and refused naming --config without one; bad files (an unknown architecture, a quantization type that cannot be
dequantized) refused by name."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from invokeai_provider.core.taxonomy import BaseModelType, ModelType, SubModelType
from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.probe import ProbeError, probe
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.quantization.gguf import is_quantized, quantized_modules
from invokeai_provider.models.testing import tiny_gguf

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _header(path: Path, tensors: dict[str, tuple[tuple[int, ...], int]]) -> Path:
    """A GGUF v3 header (no metadata) naming tensors with torch-order shapes and GGML types; the data is zeros."""
    def text(value: str) -> bytes:
        return struct.pack("<Q", len(value.encode())) + value.encode()

    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 0))
    for name, (shape, kind) in tensors.items():
        out += text(name) + struct.pack(f"<I{len(shape)}Q", len(shape), *reversed(shape)) + struct.pack("<IQ", kind, 0)
    path.write_bytes(bytes(out) + bytes(256))
    return path


KINDS = {"z_image": (tiny_gguf.build_z_image_gguf, ModelType.Main, BaseModelType.ZImage, SubModelType.Transformer),
         "flux2": (tiny_gguf.build_flux2_gguf, ModelType.Main, BaseModelType.Flux2, SubModelType.Transformer),
         "flux": (tiny_gguf.build_flux_gguf, ModelType.Main, BaseModelType.Flux, SubModelType.Transformer),
         "qwen3": (tiny_gguf.build_qwen3_gguf, ModelType.Qwen3Encoder, BaseModelType.Any, SubModelType.TextEncoder),
         "t5": (tiny_gguf.build_t5_gguf, ModelType.T5Encoder, BaseModelType.Any, SubModelType.TextEncoder2)}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_gguf_kind_probes_installs_and_loads_quantized(kind: str, tmp_path: Path) -> None:
    from diffusers.quantizers.gguf.utils import GGUFLinear

    build, model_type, base, part = KINDS[kind]
    path = build(tmp_path / f"{kind}-Q8_0.gguf", seed=2)
    found = probe(path)
    assert (found.type, found.base, found.format) == (model_type, base, ModelFormat.GGUFQuantized)
    registry = ModelRegistry((tmp_path / "root").as_uri())
    config = install_model(registry, str(path), name=kind, inplace=True)
    manager = ModelManager(registry, device="cpu")
    with manager.load(config.identifier(), part) as model:
        linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        quantized = quantized_modules(model)
        # every linear layer whose rows are whole Q8_0 blocks stays quantized; the others (narrow) are plain, and so
        # are T5's wo layers (transformers' T5 casts their input to their weight's dtype)
        wide = [name for name, m in linears.items() if m.in_features % 32 == 0 and not name.endswith(".wo")]
        assert quantized and sorted(quantized) == sorted(wide)
        assert all(isinstance(linears[name], GGUFLinear) and linears[name].weight.dtype == torch.uint8
                   and is_quantized(linears[name].weight) for name in quantized)
    if model_type is ModelType.Main:
        with pytest.raises(Exception, match="does not exist in it"):
            with manager.load(config.identifier(), SubModelType.VAE):
                pass


def test_the_flux_transformer_converted_quantized_matches_the_file_dequantized_first(tmp_path: Path) -> None:
    """The fused layers split on their quantized bytes (no dequantizing) hold the rows of the same file dequantized
    by the ``gguf`` package and then split by the same BFL converter, within float16's rounding (diffusers
    multiplies a block's scale in float16: 1e-3 of each tensor's largest value; a misplaced row would be off by its
    whole size); and the unquantized tiny transformer's weights within Q8_0's error (1%)."""
    import gguf

    from invokeai_provider.models.flux.bfl_transformer import load_gguf_transformer, to_diffusers
    from invokeai_provider.models.quantization.gguf import dequantized
    from invokeai_provider.models.testing.tiny_flux import _transformer

    path = tiny_gguf.build_flux_gguf(tmp_path / "flux1-dev-Q8_0.gguf", seed=5)
    ours = dequantized(dict(load_gguf_transformer(path, torch.float32).state_dict()), torch.float32)
    reader = gguf.GGUFReader(str(path))
    plain = {t.name: torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy()) for t in reader.tensors}
    reference = to_diffusers(plain)
    assert ours.keys() == reference.keys()
    assert all((ours[key] - reference[key]).abs().max() <= 1e-3 * reference[key].abs().max() for key in ours)
    unquantized = _transformer("dev", 5).state_dict()
    assert all((ours[key] - value).abs().max() <= 0.01 * value.abs().max() for key, value in unquantized.items())


def test_the_qwen3_encoder_matches_the_file_dequantized_by_the_gguf_package(tmp_path: Path) -> None:
    """Reference: every tensor dequantized by ``gguf.quants.dequantize`` (float32) into a plain ``Qwen3Model``, within
    2e-3 (diffusers multiplies a Q8_0 block's scale in float16: measured 3e-4); and the unquantized tiny encoder of
    the same seed within 2% of the largest value (Q8_0's error)."""
    import gguf
    from transformers import Qwen3Model

    from invokeai_provider.models.testing.tiny_z_image import _qwen3
    from invokeai_provider.models.text_encoders import qwen3

    path = tiny_gguf.build_qwen3_gguf(tmp_path / "qwen3.gguf", seed=4)
    ours = qwen3.load_gguf(path, torch.float32)
    reader = gguf.GGUFReader(str(path))
    plain = {t.name: torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy()) for t in reader.tensors}
    state = qwen3.from_llama_cpp_names(plain, path.name)
    reference = Qwen3Model(qwen3.qwen3_config({k: tuple(v.shape) for k, v in state.items()}, path.name)).eval()
    reference.load_state_dict(state, strict=True)
    unquantized = _qwen3(4).model.eval()
    ids = torch.tensor([[5, 9, 100, 3, 17, 250]])
    with torch.no_grad():
        got, want, full = (m(ids, output_hidden_states=True).hidden_states[-2] for m in (ours, reference, unquantized))
    print(f"measured: vs gguf-dequantized {(got - want).abs().max():.2e}, vs unquantized "
          f"{((got - full).abs().max() / full.abs().max()):.2e} relative")
    assert torch.allclose(got, want, atol=2e-3, rtol=0)
    assert (got - full).abs().max() <= 0.02 * full.abs().max()


def test_the_t5_encoder_matches_the_file_dequantized_by_the_gguf_package(tmp_path: Path) -> None:
    """Reference: every tensor dequantized by ``gguf.quants.dequantize`` (float32) into a plain ``T5EncoderModel``,
    within 2e-3 of the largest value (diffusers multiplies a Q8_0 block's scale in float16: measured 8e-4); and the
    unquantized tiny FLUX T5 of the same seed within 3% of it (Q8_0's error: measured 1.6%)."""
    import gguf
    from transformers import T5EncoderModel

    from invokeai_provider.models.testing.tiny_flux import _t5, t5_tokenizer
    from invokeai_provider.models.text_encoders import t5

    path = tiny_gguf.build_t5_gguf(tmp_path / "t5.gguf", seed=4)
    ours = t5.load_gguf(path, torch.float32)
    reader = gguf.GGUFReader(str(path))
    plain = {t.name: torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy()) for t in reader.tensors}
    state = t5.from_llama_cpp_names(plain, path.name)
    reference = T5EncoderModel(t5.t5_config({k: tuple(v.shape) for k, v in state.items()}, path.name)).eval()
    reference.load_state_dict({**state, "encoder.embed_tokens.weight": state["shared.weight"]}, strict=True)
    unquantized = _t5(4, len(t5_tokenizer())).eval()
    ids = t5_tokenizer()("a lighthouse in a storm, oil painting", return_tensors="pt").input_ids
    with torch.no_grad():
        got, want, full = (m(ids).last_hidden_state for m in (ours, reference, unquantized))
    print(f"measured: vs gguf-dequantized {(got - want).abs().max() / want.abs().max():.2e}, vs unquantized "
          f"{((got - full).abs().max() / full.abs().max()):.2e} relative")
    assert (got - want).abs().max() <= 2e-3 * want.abs().max()
    assert (got - full).abs().max() <= 0.03 * full.abs().max()
    assert ours.encoder.embed_tokens is ours.shared  # one table


def test_the_tiny_gguf_t5_installs_with_its_tokenizer_and_without_one_names_config(tmp_path: Path) -> None:
    from invokeai_provider.models.model_manager.manager import ModelLoadError
    from invokeai_provider.models.testing.tiny_flux import t5_tokenizer
    from invokeai_provider.models.testing.tiny_install import install_tiny

    registry = ModelRegistry((tmp_path / "root").as_uri())
    done = install_tiny(registry, "t5_encoder", format="gguf")
    assert (done.config.name, done.config.format) == ("tiny-flux-t5-encoder-gguf", ModelFormat.GGUFQuantized)
    assert done.config.config_path and Path(done.config.config_path, "tokenizer_2").is_dir()
    manager = ModelManager(registry, device="cpu")
    prompt = "a red fox in the snow"
    for part in (SubModelType.Tokenizer2, SubModelType.Tokenizer3):  # FLUX.1's slot and SD3's
        with manager.load(done.config.identifier(), part) as tokenizer:
            assert tokenizer(prompt).input_ids == t5_tokenizer()(prompt).input_ids
    bare = install_model(registry, str(tiny_gguf.build_t5_gguf(tmp_path / "bare.gguf", seed=1)), name="bare",
                         inplace=True)
    with pytest.raises(ModelLoadError, match=r"'bare' .* is a GGUF T5 encoder, which ships no tokenizer .* --config"):
        with manager.load(bare.identifier(), SubModelType.Tokenizer2):
            pass


def test_bad_gguf_files_are_refused_by_name(tmp_path: Path) -> None:
    iq1_s = 19  # an importance-matrix type diffusers cannot dequantize
    odd = _header(tmp_path / "odd-IQ1_S.gguf", {"x_embedder.weight": ((64, 64), iq1_s)})
    with pytest.raises(ProbeError, match=r"tensor 'x_embedder.weight' is quantized as IQ1_S, which this loader "
                                         r"cannot dequantize \(supported: .*Q8_0"):
        probe(odd)
    unknown = _header(tmp_path / "unknown.gguf", {"mystery.weight": ((64, 64), 8)})
    with pytest.raises(ProbeError, match=r"a GGUF file of an unknown architecture: .* \(mystery.weight"):
        probe(unknown)
    with pytest.raises(ValueError, match="expected a .gguf file"):
        tiny_gguf.build_z_image_gguf(tmp_path / "z.safetensors")
