"""The tiny FLUX.1 models: the sizes probing reads are the real ones, the T5 tokenizer has T5's format, and
diffusers' own FluxPipeline runs them offline, deterministically (the reference the FLUX nodes are held to)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from invokeai_provider.models.testing.tiny_flux import build_flux_model, t5_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_t5_tokenizer_has_t5s_special_tokens_and_ends_every_text() -> None:
    tokenizer = t5_tokenizer(256)
    ids = tokenizer("a red fox in the snow, study 7").input_ids
    assert ids[-1] == 1 and 2 not in ids  # </s> last; every character known
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    padded = tokenizer("a cat", padding="max_length", max_length=256, truncation=True).input_ids
    assert len(padded) == 256 and padded[-1] == 0
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a red fox in the snow, study 7"


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_a_tiny_flux_model_has_the_real_probed_sizes_and_runs_in_flux_pipeline(tmp_path: Path, variant: str) -> None:
    import numpy as np
    import torch
    from diffusers import FluxPipeline

    folder = build_flux_model(tmp_path / variant, variant=variant)
    transformer = json.loads((folder / "transformer" / "config.json").read_text())
    assert (transformer["in_channels"], transformer["joint_attention_dim"], transformer["pooled_projection_dim"]) == (
        64, 4096, 768)
    assert transformer["guidance_embeds"] is (variant == "dev")
    vae = json.loads((folder / "vae" / "config.json").read_text())
    assert (vae["latent_channels"], vae["scaling_factor"], vae["shift_factor"]) == (16, 0.3611, 0.1159)
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["use_dynamic_shifting"] is (variant == "dev")

    pipe = FluxPipeline.from_pretrained(folder)
    sequence = 512 if variant == "dev" else 256

    def image(seed: int) -> np.ndarray:
        return pipe("a lighthouse in a storm", height=64, width=48, num_inference_steps=2, guidance_scale=3.5,
                    max_sequence_length=sequence, generator=torch.Generator().manual_seed(seed),
                    output_type="np").images[0]

    first = image(1)
    assert first.shape == (64, 48, 3) and first.std() > 0.01
    assert np.array_equal(first, image(1)) and np.abs(first - image(2)).max() > 0.05
    with pytest.raises(FileExistsError):
        build_flux_model(folder)
