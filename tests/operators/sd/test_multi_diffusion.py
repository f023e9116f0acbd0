"""tiled_multi_diffusion_denoise_latents with the tiny SD1/SDXL models: one tile is denoise_latents; tiles that
own their columns are lone denoises of their crops (latents, noise, control image), also under a multistep
scheduler; overlapping tiles leave no seams where a naive per-tile denoise-and-paste does; bad input is named."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from PIL import Image

from helpers import edge, put_image
from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.binding import bind_model_fields
from invokeai_provider.models.testing.tiny_install import install_tiny

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]

TILED = "tiled_multi_diffusion_denoise_latents"


def put_latents(run: Any, name: str, tensor: "torch.Tensor", seed: int | None = None) -> dict[str, Any]:
    from safetensors.torch import save

    run.store.write("tensors", name + ".safetensors", save({"tensor": tensor.contiguous()}))
    return {"latents_name": name, "seed": seed}


def denoisers(run: Any, registry: Any, denoise: dict[str, dict[str, Any]], model: str = "tiny-sd1",
              prompt: str = "a red cat", extra: dict[str, dict[str, Any]] | None = None,
              extra_edges: list[dict[str, Any]] | None = None) -> dict[str, "torch.Tensor"]:
    """Runs denoise nodes (id -> fields, with their type) on one model and prompt; their output latents by id."""
    from safetensors.torch import load

    xl = model != "tiny-sd1"
    prompt_type = "sdxl_compel_prompt" if xl else "compel"
    nodes = {"model": {"type": "sdxl_model_loader" if xl else "main_model_loader", "model": model},
             "pos": {"type": prompt_type, "prompt": prompt}, "neg": {"type": prompt_type, "prompt": ""},
             **denoise, **(extra or {})}
    clips = ("clip", "clip2") if xl else ("clip",)
    edges = [edge("model", clip, prompt_node, clip) for clip in clips for prompt_node in ("pos", "neg")]
    for name in denoise:
        edges += [edge("model", "unet", name, "unet"), edge("pos", "conditioning", name, "positive_conditioning"),
                  edge("neg", "conditioning", name, "negative_conditioning")]
    doc = {"id": "md", "nodes": {k: {"id": k, **v} for k, v in nodes.items()}, "edges": edges + (extra_edges or [])}
    state = run_graph(Graph.from_dict(bind_model_fields(doc, registry)), run)
    return {name: load(run.store.read("tensors", state.outputs_of(name)[0].latents.latents_name + ".safetensors"))
            ["tensor"] for name in denoise}


def random_latents(seed: int, height: int, width: int) -> "torch.Tensor":
    return torch.randn((1, 4, height, width), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("scheduler", ["euler", "dpmpp_2m", "euler_a"])
def test_one_tile_is_denoise_latents(model_run, tiny_registry, scheduler: str) -> None:
    """With one tile over the whole image (tiles default to 1024 px, cut down to the image) the node is
    denoise_latents, exactly, for txt2img and img2img and for a multistep and a stochastic scheduler."""
    noise = put_latents(model_run, "noise", random_latents(1, 8, 8), seed=5)
    image = put_latents(model_run, "image", random_latents(2, 8, 8))
    common = {"steps": 3, "cfg_scale": 7.5, "scheduler": scheduler, "noise": noise}
    out = denoisers(model_run, tiny_registry, {
        "plain": {"type": "denoise_latents", **common}, "tiled": {"type": TILED, **common},
        "plain_i2i": {"type": "denoise_latents", **common, "latents": image, "denoising_start": 0.4},
        "tiled_i2i": {"type": TILED, **common, "latents": image, "denoising_start": 0.4}})
    assert torch.equal(out["plain"], out["tiled"])
    assert torch.equal(out["plain_i2i"], out["tiled_i2i"])
    assert not torch.equal(out["plain"], out["plain_i2i"])


def test_latents_without_noise_are_taken_as_noised(model_run, tiny_registry) -> None:
    """No noise connected (a refiner's input): InvokeAI adds none, so under Euler (whose noising adds sigma times
    the noise) the node gives what zero noise gives; denoising_start 1 runs no step and returns the latents."""
    image = random_latents(6, 8, 15)
    common = {"steps": 3, "cfg_scale": 7.5, "scheduler": "euler", "denoising_start": 0.3, "tile_width": 64,
              "tile_height": 64, "tile_overlap": 8, "latents": put_latents(model_run, "image", image)}
    out = denoisers(model_run, tiny_registry, {
        "bare": {"type": TILED, **common},
        "zero": {"type": TILED, **common, "noise": put_latents(model_run, "zeros", torch.zeros_like(image))},
        "noised": {"type": TILED, **common, "noise": put_latents(model_run, "noise", random_latents(7, 8, 15))},
        "none": {"type": TILED, **common, "denoising_start": 1.0}})
    assert torch.equal(out["bare"], out["zero"])
    assert not torch.allclose(out["bare"], out["noised"], atol=1e-2)
    assert torch.equal(out["none"], image)


def step_ratio(field: "torch.Tensor", borders: list[int]) -> float:
    """Mean absolute step between neighbouring latents across the given column and row borders (a border c lies
    between c - 1 and c), over the mean absolute step across every other column and row boundary."""
    columns = (field[..., :, 1:] - field[..., :, :-1]).abs().mean(dim=(0, 1, 2))
    rows = (field[..., 1:, :] - field[..., :-1, :]).abs().mean(dim=(0, 1, 3))
    at = torch.zeros(len(columns), dtype=torch.bool)
    at[[c - 1 for c in borders]] = True
    steps, across = torch.cat([columns, rows]), torch.cat([at, at])
    return float(steps[across].mean() / steps[~across].mean())


def test_overlapping_tiles_leave_no_seams(model_run, tiny_registry) -> None:
    """A 2x latent upscale (16x16 latents of seed 8 bilinearly to 32x32, 256 px) refined from denoising_start 0.5
    (euler, 4 steps, CFG 3), by the node with 128 px tiles and a 64 px overlap (3x3 tiles at latent 0, 8, 16,
    borders at 8, 16, 24) and naively by denoise_latents on each 128 px quarter, pasted side by side (border 16).

    Criterion: the seams a tiling adds are steps in its result's deviation from the untiled result (denoise_latents
    on the whole image). Their step ratio (:func:`step_ratio`: mean |step| across the tile borders over the mean
    |step| elsewhere) must stay under 1.3 for the node, at its own borders and at the naive one, and exceed 1.6 for
    the naive paste. Seen: node 1.15 (its borders) and 1.20 (latent 16), naive 2.14; across seeds 5-8 and CFG 3-7.5,
    node 1.07-1.20, naive 2.00-2.27; the node's tiles pasted over each other instead of blended: 1.43. (The raw
    result's step ratio shows no seam even for the naive paste, 0.9-1.04: the random tiny UNet leaves latents
    dominated by noise, so the deviation is what can show a seam.)
    """
    smooth = torch.nn.functional.interpolate(random_latents(8, 16, 16), scale_factor=2, mode="bilinear",
                                             align_corners=False)
    noise = random_latents(108, 32, 32)
    common = {"steps": 4, "cfg_scale": 3.0, "scheduler": "euler", "denoising_start": 0.5,
              "noise": put_latents(model_run, "noise", noise, seed=1), "latents": put_latents(model_run, "image", smooth)}
    nodes = {"tiled": {"type": TILED, **common, "tile_width": 128, "tile_height": 128, "tile_overlap": 64},
             "whole": {"type": "denoise_latents", **common}}
    for y in (0, 16):
        for x in (0, 16):
            nodes[f"naive{y}_{x}"] = {
                "type": "denoise_latents", **common,
                "noise": put_latents(model_run, f"noise{y}_{x}", noise[..., y:y + 16, x:x + 16], seed=1),
                "latents": put_latents(model_run, f"image{y}_{x}", smooth[..., y:y + 16, x:x + 16])}
    out = denoisers(model_run, tiny_registry, nodes)
    naive = torch.zeros_like(smooth)
    for y in (0, 16):
        for x in (0, 16):
            naive[..., y:y + 16, x:x + 16] = out[f"naive{y}_{x}"]
    tiled, pasted = out["tiled"] - out["whole"], naive - out["whole"]
    assert step_ratio(tiled, [8, 16, 24]) < 1.3 and step_ratio(tiled, [16]) < 1.3
    assert step_ratio(pasted, [16]) > 1.6
    assert 0 < tiled.abs().mean() < pasted.abs().mean()  # tiles change the result, less than a naive paste


def two_tiles(model_run, tiny_registry, scheduler: str, steps: int, **tiled: Any) -> dict[str, "torch.Tensor"]:
    """A 120x64 px image (15x8 latents) in two 64 px tiles at latent columns 0 and 7 (min overlap 8 px): the
    blend ramps give column 7 wholly to the left tile, so the left tile owns columns 0-7, the right 8-14. Runs the
    node with a ControlNet on a block-pattern hint, without it, and denoise_latents on each tile's crops."""
    noise = random_latents(21, 8, 15)
    blocks = np.random.default_rng(4).integers(0, 256, (8, 15, 3), dtype=np.uint8)
    hint = Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8)))
    put_image(model_run, "hint.png", hint)
    put_image(model_run, "hint_left.png", hint.crop((0, 0, 64, 64)))
    put_image(model_run, "hint_right.png", hint.crop((56, 0, 120, 64)))
    controlnet = install_tiny(tiny_registry, "controlnet", "sd-1", name="tiny-sd1-controlnet").config.identifier()
    common = {"steps": steps, "cfg_scale": 7.5, "scheduler": scheduler}
    extra = {name: {"type": "controlnet", "image": {"image_name": f"{name}.png"}, "control_model": controlnet,
                    "control_weight": 0.8} for name in ("hint", "hint_left", "hint_right")}
    return denoisers(model_run, tiny_registry, {
        "tiled": {"type": TILED, **common, "noise": put_latents(model_run, "noise", noise, seed=3),
                  "tile_width": 64, "tile_height": 64, "tile_overlap": 8, **tiled},
        "uncontrolled": {"type": TILED, **common, "noise": put_latents(model_run, "noise", noise, seed=3),
                         "tile_width": 64, "tile_height": 64, "tile_overlap": 8, **tiled},
        "left": {"type": "denoise_latents", **common, "noise": put_latents(model_run, "left", noise[..., :8], seed=3)},
        "right": {"type": "denoise_latents", **common,
                  "noise": put_latents(model_run, "right", noise[..., 7:], seed=3)}},
        extra=extra, extra_edges=[edge("hint", "control", "tiled", "control"),
                                  edge("hint_left", "control", "left", "control"),
                                  edge("hint_right", "control", "right", "control")])


def test_each_tile_denoises_its_own_crops(model_run, tiny_registry) -> None:
    """One step (tiles meet only in the blend): each tile's columns are denoise_latents on the tile's crop of the
    noise and of the ControlNet's control image, which steers the result. Handing a tile the whole control image,
    or another tile's part, would break the equality."""
    out = two_tiles(model_run, tiny_registry, "euler", 1)
    assert torch.allclose(out["tiled"][..., :8], out["left"], atol=1e-5)
    assert torch.allclose(out["tiled"][..., 8:], out["right"][..., 1:], atol=1e-5)
    change = (out["tiled"] - out["uncontrolled"]).abs().mean() / out["uncontrolled"].abs().mean()
    assert change > 0.1  # 0.29 seen


def test_a_multistep_scheduler_runs_once_per_tile(model_run, tiny_registry) -> None:
    """DPM++ 2M keeps earlier steps' model outputs: every tile has a scheduler of its own, so the left tile, which
    owns its columns at every step, comes out as denoise_latents on its crops (one shared scheduler would step it
    with the other tile's history and step counter). The right tile takes the left's column 7 each step."""
    out = two_tiles(model_run, tiny_registry, "dpmpp_2m", 3)
    assert torch.allclose(out["tiled"][..., :8], out["left"], atol=1e-5)
    assert (out["tiled"][..., 8:] - out["right"][..., 1:]).abs().max() > 1e-3


def test_sdxl_tiles(model_run, tiny_registry) -> None:
    """tiny-sdxl (pooled embeddings and time ids per tile): one tile is denoise_latents; with two tiles the left
    tile is denoise_latents on its crop."""
    noise = random_latents(31, 8, 15)
    common = {"steps": 2, "cfg_scale": 5.0, "scheduler": "euler"}
    out = denoisers(model_run, tiny_registry, {
        "tiled": {"type": TILED, **common, "noise": put_latents(model_run, "noise", noise, seed=3),
                  "tile_width": 64, "tile_height": 64, "tile_overlap": 8},
        "one_tile": {"type": TILED, **common, "noise": put_latents(model_run, "noise", noise, seed=3)},
        "whole": {"type": "denoise_latents", **common, "noise": put_latents(model_run, "noise", noise, seed=3)},
        "left": {"type": "denoise_latents", **common, "noise": put_latents(model_run, "left", noise[..., :8], seed=3)}},
        model="tiny-sdxl")
    assert torch.equal(out["one_tile"], out["whole"])
    assert torch.allclose(out["tiled"][..., :8], out["left"], atol=1e-5)
    assert not torch.allclose(out["tiled"], out["whole"], atol=1e-3)


@pytest.mark.parametrize("fields, message", [
    ({"tile_width": 60}, "tile_width"),
    ({"tile_overlap": 0}, "tile_overlap"),
    ({"cfg_scale": 0.5}, "cfg_scale"),
    ({"tile_width": 64, "tile_overlap": 64}, "field tile_overlap: 64 must be less than tile_width 64"),
    ({"cfg_scale": [7.5, 7.5]}, r"field cfg_scale: a list needs one value per step \(3\), got 2"),
    ({"noise": None}, "field latents: fields noise and latents are both empty"),
])
def test_bad_input_is_named(model_run, tiny_registry, fields: dict[str, Any], message: str) -> None:
    node = {"type": TILED, "steps": 3, "noise": put_latents(model_run, "noise", random_latents(1, 8, 8)), **fields}
    with pytest.raises(InvokeAIProviderError, match=message) as caught:
        denoisers(model_run, tiny_registry, {"bad": node})
    assert "bad" in str(caught.value)


def test_control_weights_per_step_are_checked(model_run, tiny_registry) -> None:
    put_image(model_run, "hint.png", Image.new("RGB", (64, 64), "white"))
    controlnet = install_tiny(tiny_registry, "controlnet", "sd-1", name="tiny-sd1-controlnet").config.identifier()
    control = {"control": {"type": "controlnet", "image": {"image_name": "hint.png"}, "control_model": controlnet,
                           "control_weight": [0.5, 0.5]}}
    node = {"type": TILED, "steps": 3, "noise": put_latents(model_run, "noise", random_latents(1, 8, 8))}
    with pytest.raises(InvokeAIProviderError, match="node bad .*field control: a list of 2 control weights for 3"):
        denoisers(model_run, tiny_registry, {"bad": node}, extra=control,
                  extra_edges=[edge("control", "control", "bad", "control")])
