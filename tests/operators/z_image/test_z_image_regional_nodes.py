"""Z-Image regional prompts through the nodes: masked z_image_text_encoder conditionings collected into
z_image_denoise's ``positive_conditioning``, on the tiny Z-Image model (128x64, 3 steps).

No diffusers pipeline has Z-Image regional prompts, so these check InvokeAI's semantics (its z_image_denoise 1.6.0
as read from its source) rather than pixel parity: a one-item list is the plain conditioning exactly; a region over
the whole image is the plain prompt exactly but for the padding tokens its masked layers hide; emptying one half's
region changes mainly that half. The mask construction itself is checked against hand-computed masks in
tests/models/z_image/test_z_image_regional.py.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import pytest
import torch
from z_image_helpers import PROMPT, link, t2i_graph

from invokeai_provider.core.context import RunContext
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDTH, HEIGHT = 128, 64


def put_mask(run: RunContext, name: str, mask: torch.Tensor) -> str:
    from safetensors.torch import save

    run.store.write("tensors", f"{name}.safetensors", save({"tensor": mask.contiguous()}))
    return name


def half(run: RunContext, side: str) -> str:
    """A ``(1, H, W)`` bool mask over the ``side`` half of the image."""
    mask = torch.zeros(1, HEIGHT, WIDTH, dtype=torch.bool)
    mask[..., :WIDTH // 2] = True
    return put_mask(run, side, mask if side == "left" else ~mask)


def regional_graph(identifier: dict[str, Any], regions: list[tuple[str, Optional[str]]]) -> dict[str, Any]:
    """``t2i_graph`` with one z_image_text_encoder per ``(prompt, mask tensor name or None)``, collected in order
    into the denoise's ``positive_conditioning``."""
    graph = t2i_graph(identifier)
    del graph["nodes"]["prompt"]
    graph["edges"] = [e for e in graph["edges"]
                      if "prompt" not in (e["source"]["node_id"], e["destination"]["node_id"])]
    graph["nodes"]["collect"] = {"id": "collect", "type": "collect"}
    for index, (text, mask) in enumerate(regions):
        node = {"id": f"prompt{index}", "type": "z_image_text_encoder", "prompt": text}
        if mask is not None:
            node["mask"] = {"tensor_name": mask}
        graph["nodes"][node["id"]] = node
        graph["edges"] += [link("load", "qwen3_encoder", node["id"]),
                           link(node["id"], "conditioning", "collect", "item")]
    graph["edges"].append(link("collect", "collection", "denoise", "positive_conditioning"))
    return graph


@pytest.fixture
def run_regions(run_t2i: Callable[..., np.ndarray], z_image: tuple[Any, dict[str, Any]]
                ) -> Callable[[list[tuple[str, Optional[str]]]], np.ndarray]:
    return lambda regions: run_t2i(graph=regional_graph(z_image[1], regions))


def denoised(run: RunContext, identifier: dict[str, Any], regions: list[tuple[str, Optional[str]]]) -> torch.Tensor:
    """The denoise node's latents ``(1, 16, h/8, w/8)`` for `regional_graph`'s regions."""
    from safetensors.torch import load

    [out] = run_graph(Graph.from_dict(regional_graph(identifier, regions)), run).outputs_of("denoise")
    return load(run.store.read("tensors", f"{out.latents.latents_name}.safetensors"))["tensor"]


def halves_difference(latents: torch.Tensor, other: torch.Tensor) -> tuple[float, float]:
    """The mean absolute difference of the left and the right half of two latents."""
    diff = (latents - other).abs()
    middle = diff.shape[-1] // 2
    return diff[..., :middle].mean().item(), diff[..., middle:].mean().item()


def test_one_unmasked_conditioning_in_a_list_is_the_plain_conditioning(
        run_t2i: Callable[..., np.ndarray], run_regions: Callable[..., np.ndarray]) -> None:
    assert np.array_equal(run_regions([(PROMPT, None)]), run_t2i())


PROMPT_32 = "a red fox in the snow very big old tall small green blue cold"  # 32 tokens in the chat template


@pytest.mark.parametrize("see_padding", [False, True])
def test_a_region_over_the_whole_image_is_the_plain_prompt(
        z_run: RunContext, run_t2i: Callable[..., np.ndarray], run_regions: Callable[..., np.ndarray],
        monkeypatch: pytest.MonkeyPatch, see_padding: bool) -> None:
    """A region over the whole image lets every token see every other real token, so it differs from the plain
    prompt only in that its masked layers hide the padding tokens from the real ones (as InvokeAI's mask does). With
    a 32-token prompt on the 32-token image (no padding) it is the plain prompt's image exactly; with the 17-token
    PROMPT (15 padding tokens) it is exactly the plain image once the padding is let back in (``see_padding``), and
    differs without (measured max 15 levels, mean 1.7: the tiny random weights give the padding real weight)."""
    from invokeai_provider.models.testing.tiny_qwen3 import qwen3_tokenizer
    from invokeai_provider.models.z_image import regional
    from invokeai_provider.models.z_image.text_encoding import chat_prompt

    tokenizer = qwen3_tokenizer()
    assert len(tokenizer(chat_prompt(tokenizer, PROMPT_32)).input_ids) == 32
    assert len(tokenizer(chat_prompt(tokenizer, PROMPT)).input_ids) == 17
    whole = put_mask(z_run, "whole", torch.ones(1, HEIGHT, WIDTH, dtype=torch.bool))
    if see_padding:
        monkeypatch.setattr(regional, "sequence_mask", lambda mask, tokens: torch.ones(
            1, 1, regional.padded(tokens) + regional.padded(mask.shape[0] - tokens),
            regional.padded(tokens) + regional.padded(mask.shape[0] - tokens), dtype=torch.bool))
    else:
        assert np.array_equal(run_regions([(PROMPT_32, whole)]), run_t2i(prompt=PROMPT_32))
    image, plain = run_regions([(PROMPT, whole)]), run_t2i()
    diff = np.abs(image - plain)
    print(f"whole-image region vs plain (17 tokens, see padding {see_padding}): max {diff.max()}, "
          f"mean {diff.mean():.3f}")
    assert (diff.max() == 0) == see_padding


@pytest.mark.parametrize("dropped", ["left", "right"])
def test_a_regions_prompt_changes_mainly_its_half(z_run: RunContext, z_image: tuple[Any, dict[str, Any]],
                                                 dropped: str) -> None:
    """Prompt A on the left and B on the right, against the same prompts with the ``dropped`` side's region made
    empty (its prompt then reaches no image token on the masked layers): the dropped half of the denoised latents
    changes several times more than the other (latents, since the VAE's decoder spreads a change across the halves).
    The prompts stay the same tokens in the same order: the caption refiner attends over all of them (unmasked, in
    InvokeAI too), so another prompt would change the other region's tokens as well. The other half still changes a
    little: the odd main layers are unmasked and image tokens see each other, as in InvokeAI. Threshold 4x; measured
    (mean absolute difference, dropped half / other half): left 0.052 / 0.0051 (10x), right 0.070 / 0.0090 (7.8x)."""
    masks = {"left": half(z_run, "left"), "right": half(z_run, "right")}
    nowhere = put_mask(z_run, "nowhere", torch.zeros(1, HEIGHT, WIDTH, dtype=torch.bool))
    prompts = {"left": PROMPT, "right": "a blue whale under the sea"}
    both = denoised(z_run, z_image[1], [(prompts[side], masks[side]) for side in ("left", "right")])
    one = denoised(z_run, z_image[1], [(prompts[side], nowhere if side == dropped else masks[side])
                                       for side in ("left", "right")])
    left, right = halves_difference(both, one)
    changed, other = (left, right) if dropped == "left" else (right, left)
    print(f"{dropped} region emptied: {dropped} half {changed:.4f}, other half {other:.4f} (latents)")
    assert changed > 4 * other


def test_a_region_mask_of_the_wrong_shape_is_refused_naming_the_field(
        z_run: RunContext, z_image: tuple[Any, dict[str, Any]]) -> None:
    from invokeai_provider.errors import NodeExecutionError

    bad = put_mask(z_run, "rgb", torch.ones(3, HEIGHT, WIDTH))
    graph = regional_graph(z_image[1], [(PROMPT, None), ("a blue whale", bad)])
    with pytest.raises(NodeExecutionError, match=r"region mask 'rgb' of shape \(3, 64, 128\); expected \(1, H, W\)") \
            as caught:
        run_graph(Graph.from_dict(graph), z_run)
    assert caught.value.node_id == "denoise" and caught.value.field == "positive_conditioning"
