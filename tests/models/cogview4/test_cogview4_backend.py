"""CogView4's backend on the tiny model: the offline GLM tokenizer, probing and installing a CogView4Pipeline folder
and loading each part, InvokeAI's schedule against diffusers' scheduler, and the GLM encoding against
CogView4Pipeline's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from invokeai_provider.core.taxonomy import BaseModelType, ModelType, SubModelType
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.probe import ProbeError, probe
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_cogview4 import SCHEDULER, build_cogview4_model, glm_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cogview4_model(tmp_path_factory.mktemp("cogview4") / "tiny-cogview4", seed=5)


@pytest.fixture(scope="module")
def installed(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelManager, Any]:
    registry = ModelRegistry(tmp_path_factory.mktemp("cogview4-root").as_uri())
    config = install_model(registry, str(folder), name="tiny-cogview4", inplace=True)
    return ModelManager(registry, device="cpu"), config


def test_the_glm_tokenizer_has_glms_prefix_pad_token_and_left_padding(tmp_path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    tokenizer = glm_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = PreTrainedTokenizerFast.from_pretrained(tmp_path)  # what InvokeAI asserts the tokenizer is
    ids = loaded(["a cat in the snow"]).input_ids[0]
    assert loaded.convert_ids_to_tokens(ids[:2]) == ["[gMASK]", "<sop>"]
    assert loaded.decode(ids[2:]) == "a cat in the snow"
    assert loaded.pad_token == "<|endoftext|>" and loaded.padding_side == "left"
    assert len(loaded("Ünïcode ☃ words")["input_ids"]) > 2  # byte-level: nothing is unknown
    batch = loaded(["a cat", "a cat in the snow at night"], padding="longest").input_ids
    assert batch[0][0] == loaded.pad_token_id and batch[1][0] != loaded.pad_token_id


def test_a_cogview4_folder_probes_installs_and_loads_each_part(folder: Path,
                                                               installed: tuple[ModelManager, Any]) -> None:
    result = probe(folder)
    assert (result.type, result.base, result.format.value) == (ModelType.Main, BaseModelType.CogView4, "diffusers")
    assert json.loads((folder / "model_index.json").read_text())["tokenizer"] == ["transformers",
                                                                                   "PreTrainedTokenizerFast"]
    manager, config = installed
    assert config.base is BaseModelType.CogView4
    classes = {}
    for part in ("tokenizer", "text_encoder", "transformer", "vae"):
        with manager.load(config.identifier(), SubModelType(part)) as model:
            classes[part] = type(model).__name__
    assert classes == {"tokenizer": "TokenizersBackend", "text_encoder": "GlmModel",
                       "transformer": "CogView4Transformer2DModel", "vae": "AutoencoderKL"}
    with manager.load(config.identifier(), SubModelType.Scheduler) as scheduler:
        assert scheduler["time_shift_type"] == "linear" and scheduler["use_dynamic_shifting"] is True


def test_a_cogview4_folder_missing_a_part_is_refused_naming_it(folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "transformer")
    with pytest.raises(ProbeError, match="without transformer/config.json"):
        probe(broken)
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder"] = ["transformers", "T5EncoderModel"]
    shutil.copytree(folder / "transformer", broken / "transformer")
    (broken / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ProbeError, match="text_encoder is .*T5EncoderModel.*expected GlmModel"):
        probe(broken)


@pytest.mark.parametrize("steps,start", [(4, 0.0), (5, 0.0), (4, 0.4)])
def test_the_schedule_is_invokeais_and_diffusers_scheduler_shifts_it_the_same(steps: int, start: float) -> None:
    """InvokeAI's sigmas are the scheduler's (CogView4-6B's linear dynamic shift) for the same unshifted
    timesteps; the timesteps start exactly at 1 - denoising_start and end at 0."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from invokeai_provider.models.cogview4 import sampling

    seq_len = sampling.image_seq_len(64, 96, patch_size=2)
    assert seq_len == 24
    timesteps, sigmas = sampling.schedule(steps, seq_len, denoising_start=start)
    assert timesteps[0] == pytest.approx(1 - start) and timesteps[-1] == 0.0 and sigmas[-1] == 0.0
    if start == 0:
        assert timesteps == pytest.approx([1 - i / steps for i in range(steps + 1)])
    scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER)
    mu = sampling.shift_mu(seq_len)
    assert mu == pytest.approx(0.75 * (24 / 256) ** 0.5 + 0.25)
    scheduler.set_timesteps(sigmas=timesteps[:-1], mu=mu)
    assert scheduler.sigmas.tolist() == pytest.approx(sigmas, abs=1e-6)
    assert all(a > b for a, b in zip(sigmas, sigmas[1:]))  # shifted, still strictly falling
    # below 1,024 tokens mu < 1 and the shift pulls the sigmas towards the image (InvokeAI's time_shift_linear)
    assert sigmas[1:-1] == pytest.approx([mu / (mu + 1 / t - 1) for t in timesteps[1:-1]])
    assert mu < 1 and all(s < t for s, t in zip(sigmas[1:-1], timesteps[1:-1]))


def test_the_noise_is_invokeais_float16_draw() -> None:
    from invokeai_provider.models.cogview4 import sampling

    drawn = sampling.noise(7, 64, 32)
    assert drawn.shape == (1, 16, 8, 4) and drawn.dtype == torch.float32
    expected = torch.randn(1, 16, 8, 4, dtype=torch.float16, generator=torch.Generator().manual_seed(7)).float()
    assert torch.equal(drawn, expected)


def test_the_glm_encoding_is_cogview4_pipelines(installed: tuple[ModelManager, Any]) -> None:
    from diffusers import CogView4Pipeline

    from invokeai_provider.models.cogview4.text_encoding import encode_glm

    manager, config = installed
    with manager.load(config.identifier(), SubModelType.Tokenizer) as tokenizer, \
            manager.load(config.identifier(), SubModelType.TextEncoder) as encoder:
        prompt = "a red fox in the snow, oil painting"
        mine = encode_glm(tokenizer, encoder, prompt)
        pipe = CogView4Pipeline(tokenizer=tokenizer, text_encoder=encoder, vae=None, transformer=None, scheduler=None)
        theirs = pipe._get_glm_embeds(prompt, device=torch.device("cpu"))
        cut: list[str] = []
        short = encode_glm(tokenizer, encoder, prompt, max_seq_len=8, warn=cut.append)
    assert mine.shape[1] % 16 == 0 and mine.shape[2] == 32
    assert torch.equal(mine, theirs)
    assert short.shape[1] == 16 and cut and "truncated to 8 tokens" in cut[0]


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_a_cogview4_transformer_alone_is_refused_with_the_reason(folder: Path, tmp_path: Path, prefix: str) -> None:
    """As a single file (bare or ComfyUI-prefixed names) and as a lone transformer folder: InvokeAI 6.11 takes
    CogView4 only as a CogView4Pipeline folder."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    single = tmp_path / "cogview4-transformer.safetensors"
    save_file({prefix + key: value for key, value in weights.items()}, str(single))
    with pytest.raises(ProbeError, match="a CogView4 transformer on its own.*CogView4Pipeline"):
        probe(single)
    if not prefix:
        with pytest.raises(ProbeError, match="a CogView4 transformer on its own"):
            probe(folder / "transformer")
