"""Latent nodes: noise, scheduler, lresize, lscale, lblend and crop_latents, run through the engine."""

from __future__ import annotations

import io

import pytest

from helpers import edge, only_output, run_nodes

import invokeai_provider.operators.sd.latents  # noqa: F401 (registers the latent node types)
from invokeai_provider.errors import NodeExecutionError, NodeValidationError
from invokeai_provider.core.registry import InvocationRegistry

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")


def _load(run, name):
    from safetensors.torch import load

    return load(run.store.read("tensors", name + ".safetensors"))["tensor"]


def _put(run, name, tensor):
    from safetensors.torch import save

    run.store.write("tensors", name + ".safetensors", save({"tensor": tensor.contiguous()}))
    return {"latents_name": name}


def _put_image(run, name, image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    run.store.write("images", name, buffer.getvalue())
    return {"image_name": name}


def _grid(*shape):
    return torch.arange(float(np.prod(shape))).reshape(shape)


# --- declarations -------------------------------------------------------------------------------------

# type -> (class name, title, version, tags, output type)
DECLARED = {
    "noise": ("NoiseInvocation", "Create Latent Noise", "1.1.0", ["latents", "noise"], "noise_output"),
    "scheduler": ("SchedulerInvocation", "Scheduler", "1.0.0", ["scheduler"], "scheduler_output"),
    "lresize": ("ResizeLatentsInvocation", "Resize Latents", "1.0.2", ["latents", "resize"], "latents_output"),
    "lscale": ("ScaleLatentsInvocation", "Scale Latents", "1.0.2", ["latents", "resize"], "latents_output"),
    "lblend": ("BlendLatentsInvocation", "Blend Latents", "1.1.0", ["latents", "blend", "mask"], "latents_output"),
    "crop_latents": ("CropLatentsCoreInvocation", "Crop Latents", "1.0.2", ["latents", "crop"], "latents_output"),
}


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_declaration_matches_invokeai(node_type):
    cls = InvocationRegistry.get_invocation_class(node_type)
    name, title, version, tags, output_type = DECLARED[node_type]
    assert (cls.__name__, cls.UIConfig.title, cls.UIConfig.version) == (name, title, version)
    assert cls.UIConfig.tags == tags
    assert cls.UIConfig.category == "latents"
    assert cls.output_class.get_type() == output_type


def test_field_defaults_and_constraints_match_invokeai():
    noise = InvocationRegistry.get_invocation_class("noise").model_json_schema()["properties"]
    assert noise["noise_type"]["default"] == "SD"
    assert noise["noise_type"]["enum"] == ["SD", "FLUX", "FLUX.2", "SD3", "CogView4", "Z-Image", "Anima"]
    assert (noise["seed"]["default"], noise["seed"]["minimum"], noise["seed"]["maximum"]) == (0, 0, 2**32 - 1)
    for side in ("width", "height"):
        assert (noise[side]["default"], noise[side]["exclusiveMinimum"], noise[side]["multipleOf"]) == (512, 0, 8)
    assert noise["use_cpu"]["default"] is True

    resize = InvocationRegistry.get_invocation_class("lresize").model_json_schema()["properties"]
    width = resize["width"]["anyOf"][0]
    assert (width["minimum"], width["multipleOf"]) == (64, 8)
    assert resize["width"]["orig_required"] and resize["latents"]["input"] == "connection"
    assert resize["mode"]["default"] == "bilinear" and resize["antialias"]["default"] is False

    scale = InvocationRegistry.get_invocation_class("lscale").model_json_schema()["properties"]
    assert scale["scale_factor"]["anyOf"][0]["exclusiveMinimum"] == 0 and scale["scale_factor"]["orig_required"]

    blend = InvocationRegistry.get_invocation_class("lblend").model_json_schema()["properties"]
    assert (blend["alpha"]["default"], blend["alpha"]["minimum"]) == (0.5, 0)
    assert blend["mask"]["default"] is None

    crop = InvocationRegistry.get_invocation_class("crop_latents").model_json_schema()["properties"]
    assert [crop[f]["anyOf"][0]["minimum"] for f in ("x", "y", "width", "height")] == [0, 0, 1, 1]
    assert all(crop[f]["anyOf"][0]["multipleOf"] == 8 for f in ("x", "y", "width", "height"))


# --- noise --------------------------------------------------------------------------------------------


def test_noise_is_the_seeded_cpu_normal_draw(run):
    out = only_output(run, {"type": "noise", "seed": 42, "width": 64, "height": 64})
    noise = _load(run, out.noise.latents_name)
    assert noise.shape == (1, 4, 8, 8) and noise.dtype == torch.float32
    # InvokeAI's recipe: a CPU torch.Generator seeded with the seed, one randn of the latent shape.
    expected = torch.randn(1, 4, 8, 8, generator=torch.Generator(device="cpu").manual_seed(42))
    assert torch.equal(noise, expected)
    # The well-known first values of torch's normal stream for seed 42.
    assert noise.flatten()[:4].tolist() == pytest.approx([1.9269, 1.4873, 0.9007, -2.1055], abs=1e-4)
    assert (out.noise.seed, out.width, out.height) == (42, 64, 64)


def test_noise_is_repeatable_and_depends_on_the_seed(run):
    def draw(seed):
        # Every run of node "n" writes the same tensor name, so read each result before the next run.
        out = only_output(run, {"type": "noise", "seed": seed, "width": 64, "height": 64})
        return _load(run, out.noise.latents_name)

    first, again, other = draw(7), draw(7), draw(8)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_noise_shape_follows_height_then_width(run):
    out = only_output(run, {"type": "noise", "seed": 1, "width": 96, "height": 32})
    assert _load(run, out.noise.latents_name).shape == (1, 4, 4, 12)
    assert (out.width, out.height) == (96, 32)


@pytest.mark.parametrize("noise_type, shape", [
    ("FLUX", (1, 16, 4, 6)),
    ("FLUX.2", (1, 32, 4, 6)),
    ("SD3", (1, 16, 4, 6)),
    ("Z-Image", (1, 16, 4, 6)),
    ("Anima", (1, 16, 1, 4, 6)),
])
def test_noise_types_have_their_architecture_shapes(run, noise_type, shape):
    out = only_output(run, {"type": "noise", "noise_type": noise_type, "seed": 3, "width": 48, "height": 32})
    noise = _load(run, out.noise.latents_name)
    assert noise.shape == shape
    assert torch.equal(noise, torch.randn(*shape, generator=torch.Generator().manual_seed(3)))
    assert (out.width, out.height) == (48, 32)


def test_noise_refuses_a_width_that_is_not_a_multiple_of_8(run):
    with pytest.raises(NodeValidationError) as info:
        run_nodes(run, {"n": {"type": "noise", "width": 65, "height": 64}})
    assert info.value.field == "width"
    assert "node n (noise)" in str(info.value) and "multiple of 8" in str(info.value)


def test_noise_refuses_a_size_the_architecture_cannot_take(run):
    with pytest.raises(NodeExecutionError) as info:
        run_nodes(run, {"n": {"type": "noise", "noise_type": "CogView4", "width": 48, "height": 64}})
    assert "CogView4 noise width and height must be a multiple of 32" in str(info.value)


def test_noise_seed_wraps_like_invokeai(run):
    out = only_output(run, {"type": "noise", "seed": -1, "width": 64, "height": 64})
    assert out.noise.seed == 2**32 - 1
    expected = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2**32 - 1))
    assert torch.equal(_load(run, out.noise.latents_name), expected)


def test_noise_seed_can_come_from_an_edge(run):
    state = run_nodes(run, {"s": {"type": "integer", "value": 42}, "n": {"type": "noise", "width": 64, "height": 64}},
                      [edge("s", "value", "n", "seed")])
    [out] = state.outputs_of("n")
    assert out.noise.seed == 42


# --- scheduler ----------------------------------------------------------------------------------------


def test_scheduler_node_passes_its_choice_on(run):
    assert only_output(run, {"type": "scheduler"}).scheduler == "euler"
    assert only_output(run, {"type": "scheduler", "scheduler": "dpmpp_2m_sde_k"}).scheduler == "dpmpp_2m_sde_k"


def test_scheduler_node_refuses_an_unknown_name(run):
    with pytest.raises(NodeValidationError) as info:
        run_nodes(run, {"n": {"type": "scheduler", "scheduler": "euler_z"}})
    assert info.value.field == "scheduler"


# --- resize and scale ---------------------------------------------------------------------------------


def test_lresize_nearest_picks_every_other_cell(run):
    latents = _grid(1, 4, 16, 16)
    out = only_output(run, {"type": "lresize", "latents": {**_put(run, "src", latents), "seed": 5},
                            "width": 64, "height": 64, "mode": "nearest"})
    resized = _load(run, out.latents.latents_name)
    assert torch.equal(resized, latents[..., ::2, ::2])
    assert (out.width, out.height, out.latents.seed) == (64, 64, 5)


def test_lresize_takes_pixel_sizes_divided_by_8(run):
    out = only_output(run, {"type": "lresize", "latents": _put(run, "src", torch.randn(1, 4, 8, 8)),
                            "width": 128, "height": 72})
    assert _load(run, out.latents.latents_name).shape == (1, 4, 9, 16)
    assert (out.width, out.height) == (128, 72)


def test_lresize_refuses_sizes_below_64(run):
    with pytest.raises(NodeValidationError) as info:
        run_nodes(run, {"n": {"type": "lresize", "width": 32, "height": 64}})
    assert info.value.field == "width"


def test_lscale_nearest_doubles_each_cell(run):
    latents = _grid(1, 4, 3, 5)
    out = only_output(run, {"type": "lscale", "latents": _put(run, "src", latents), "scale_factor": 2,
                            "mode": "nearest", "antialias": True})  # antialias is dropped for nearest
    scaled = _load(run, out.latents.latents_name)
    assert torch.equal(scaled, latents.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1))
    assert (out.width, out.height) == (80, 48)


def test_lscale_bilinear_halving_averages_2x2_blocks(run):
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = only_output(run, {"type": "lscale", "latents": _put(run, "src", latents), "scale_factor": 0.5})
    expected = latents.reshape(1, 4, 4, 2, 4, 2).mean(dim=(3, 5))
    assert torch.allclose(_load(run, out.latents.latents_name), expected, atol=1e-6)


# --- blend --------------------------------------------------------------------------------------------


def _slerp_reference(t, a, b):
    """Spherical interpolation in float64 over the flattened tensors (lerp when nearly parallel)."""
    v0, v1 = a.double().flatten(), b.double().flatten()
    cos = float(v0 @ v1 / (v0.norm() * v1.norm()))
    if abs(cos) > 0.9995:
        mixed = (1 - t) * v0 + t * v1
    else:
        theta = np.arccos(cos)
        mixed = (np.sin((1 - t) * theta) * v0 + np.sin(t * theta) * v1) / np.sin(theta)
    return mixed.reshape(a.shape).float()


def _pair(run, seed=0):
    generator = torch.Generator().manual_seed(seed)
    a, b = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 4, 8, 8, generator=generator)
    return a, b, {"latents_a": _put(run, "a", a), "latents_b": _put(run, "b", b)}


@pytest.mark.parametrize("alpha, pick", [(0.0, "a"), (1.0, "b")])
def test_lblend_ends_return_an_input(run, alpha, pick):
    a, b, inputs = _pair(run)
    out = only_output(run, {"type": "lblend", **inputs, "alpha": alpha})
    assert torch.allclose(_load(run, out.latents.latents_name), {"a": a, "b": b}[pick], atol=1e-6)
    assert out.latents.seed is None and (out.width, out.height) == (64, 64)


def test_lblend_half_is_the_spherical_midpoint(run):
    a, b, inputs = _pair(run)
    out = only_output(run, {"type": "lblend", **inputs})
    blended = _load(run, out.latents.latents_name)
    assert torch.allclose(blended, _slerp_reference(0.5, a, b), atol=1e-5)
    # Unrelated random tensors are nearly orthogonal, so slerp is not the plain average.
    assert not torch.allclose(blended, (a + b) / 2, atol=1e-2)


def test_lblend_of_parallel_latents_is_linear(run):
    a = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    inputs = {"latents_a": _put(run, "a", a), "latents_b": _put(run, "b", 3 * a)}
    out = only_output(run, {"type": "lblend", **inputs, "alpha": 0.25})
    assert torch.allclose(_load(run, out.latents.latents_name), 1.5 * a, atol=1e-5)


def test_lblend_mask_puts_a_into_b_where_white(run):
    from PIL import Image

    a, b, inputs = _pair(run, seed=2)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # left half white
    inputs["mask"] = _put_image(run, "mask.png", mask)
    out = only_output(run, {"type": "lblend", **inputs, "alpha": 1.0})
    expected_b = b.clone()
    expected_b[..., :4] = a[..., :4]
    assert torch.allclose(_load(run, out.latents.latents_name), expected_b, atol=1e-6)

    out = only_output(run, {"type": "lblend", **inputs, "alpha": 0.5})
    assert torch.allclose(_load(run, out.latents.latents_name), _slerp_reference(0.5, a, expected_b), atol=1e-5)


def test_lblend_grey_mask_mixes_b_towards_a(run):
    from PIL import Image

    a, b, inputs = _pair(run, seed=3)
    inputs["mask"] = _put_image(run, "grey.png", Image.new("RGB", (72, 70), (51, 51, 51)))  # trimmed to 72x64
    out = only_output(run, {"type": "lblend", **inputs, "alpha": 1.0})
    assert torch.allclose(_load(run, out.latents.latents_name), b + 0.2 * (a - b), atol=1e-5)


def test_lblend_refuses_latents_of_different_sizes(run):
    inputs = {"latents_a": _put(run, "a", torch.randn(1, 4, 8, 8)), "latents_b": _put(run, "b", torch.randn(1, 4, 8, 9))}
    with pytest.raises(NodeExecutionError) as info:
        run_nodes(run, {"n": {"type": "lblend", **inputs}})
    assert "Latents to blend must be the same size." in str(info.value)


# --- crop ---------------------------------------------------------------------------------------------


def test_crop_latents_cuts_the_pixel_box_divided_by_8(run):
    latents = _grid(1, 4, 16, 16)
    out = only_output(run, {"type": "crop_latents", "latents": {**_put(run, "src", latents), "seed": 9},
                            "x": 16, "y": 8, "width": 32, "height": 24})
    assert torch.equal(_load(run, out.latents.latents_name), latents[..., 1:4, 2:6])
    assert (out.width, out.height) == (32, 24)
    assert out.latents.seed is None  # InvokeAI does not carry the seed through a crop


def test_crop_latents_past_the_edge_is_clipped(run):
    latents = _grid(1, 4, 4, 4)
    out = only_output(run, {"type": "crop_latents", "latents": _put(run, "src", latents),
                            "x": 16, "y": 0, "width": 64, "height": 32})
    assert torch.equal(_load(run, out.latents.latents_name), latents[..., 0:4, 2:4])


def test_crop_latents_refuses_coordinates_off_the_latent_grid(run):
    with pytest.raises(NodeValidationError) as info:
        run_nodes(run, {"n": {"type": "crop_latents", "x": 4, "y": 0, "width": 8, "height": 8}})
    assert info.value.field == "x" and "multiple of 8" in str(info.value)
