"""GGUF models: each kind the provider loads (Z-Image and FLUX.2 Klein transformers, Qwen3 encoders) probed,
installed and loaded through the model manager with its linear weights still quantized; the Qwen3 encoder against
the same file dequantized by the ``gguf`` package itself; bad files (an unknown architecture, a quantization type
that cannot be dequantized) refused by name."""

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


@pytest.mark.parametrize("kind", ["z_image", "flux2", "qwen3"])
def test_each_gguf_kind_probes_installs_and_loads_quantized(kind: str, tmp_path: Path) -> None:
    from diffusers.quantizers.gguf.utils import GGUFLinear

    build = {"z_image": tiny_gguf.build_z_image_gguf, "flux2": tiny_gguf.build_flux2_gguf,
             "qwen3": tiny_gguf.build_qwen3_gguf}[kind]
    path = build(tmp_path / f"{kind}-Q8_0.gguf", seed=2)
    expected = {"z_image": (ModelType.Main, BaseModelType.ZImage), "flux2": (ModelType.Main, BaseModelType.Flux2),
                "qwen3": (ModelType.Qwen3Encoder, BaseModelType.Any)}[kind]
    found = probe(path)
    assert (found.type, found.base, found.format) == (*expected, ModelFormat.GGUFQuantized)
    registry = ModelRegistry((tmp_path / "root").as_uri())
    config = install_model(registry, str(path), name=kind, inplace=True)
    manager = ModelManager(registry, device="cpu")
    part = SubModelType.TextEncoder if kind == "qwen3" else SubModelType.Transformer
    with manager.load(config.identifier(), part) as model:
        linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        quantized = quantized_modules(model)
        # every linear layer whose rows are whole Q8_0 blocks stays quantized; the others (narrow) are plain
        wide = [name for name, m in linears.items() if m.in_features % 32 == 0]
        assert quantized and sorted(quantized) == sorted(wide)
        assert all(isinstance(linears[name], GGUFLinear) and linears[name].weight.dtype == torch.uint8
                   and is_quantized(linears[name].weight) for name in quantized)
    if kind != "qwen3":
        with pytest.raises(Exception, match="does not exist in it"):
            with manager.load(config.identifier(), SubModelType.VAE):
                pass


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
