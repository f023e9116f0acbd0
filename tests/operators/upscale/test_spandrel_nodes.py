"""spandrel_image_to_image(_autoscale): declarations as InvokeAI 6.11; the tiled run, the merge of tile
overlaps, the autoscale passes and the errors, with stand-in networks where spandrel is replaced (spandrel
needs torchvision, which is not installed in CI); and, where spandrel imports, tiny random-weight spandrel
architectures installed, probed and run through the node, compared with spandrel run directly."""

from __future__ import annotations

import logging

import pytest

from helpers import only_output, put_image, stored_image

from invokeai_provider.errors import NodeExecutionError, NodeValidationError
from invokeai_provider.core.registry import InvocationRegistry

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

from invokeai_provider.models.upscalers import spandrel as spandrel_model  # noqa: E402

HAS_SPANDREL = spandrel_model.unavailable_reason() is None
needs_spandrel = pytest.mark.skipif(not HAS_SPANDREL, reason=f"spandrel: {spandrel_model.unavailable_reason()}")


def photo(height, width, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype(np.uint8)


# --- declarations ------------------------------------------------------------------------------------------


def test_declarations_match_invokeai():
    plain = InvocationRegistry.get_invocation_class("spandrel_image_to_image")
    auto = InvocationRegistry.get_invocation_class("spandrel_image_to_image_autoscale")
    assert (plain.UIConfig.title, plain.UIConfig.version, plain.UIConfig.category, plain.UIConfig.tags) == \
        ("Image-to-Image", "1.3.0", "upscale", ["upscale"])
    assert (auto.UIConfig.title, auto.UIConfig.version, auto.UIConfig.category) == \
        ("Image-to-Image (Autoscale)", "1.0.0", "upscale")
    assert plain.UIConfig.gpu and auto.UIConfig.gpu
    assert list(plain.input_fields()) == ["board", "metadata", "image", "image_to_image_model", "tile_size"]
    assert list(auto.input_fields()) == ["board", "metadata", "image", "image_to_image_model", "tile_size", "scale",
                                         "fit_to_multiple_of_8"]
    fields = auto.input_fields()
    assert (fields["tile_size"].default, fields["scale"].default, fields["fit_to_multiple_of_8"].default) == \
        (512, 4.0, False)
    assert (fields["image_to_image_model"].json_schema_extra or {}).get("ui_model_type") == "spandrel_image_to_image"
    assert plain.get_output_annotation().get_type() == auto.get_output_annotation().get_type() == "image_output"


# --- stand-in networks (spandrel replaced) -----------------------------------------------------------------


class Nearest:
    """A stand-in network: every pixel repeated ``scale`` x ``scale`` times, so any tiling must reproduce
    np.repeat of the input exactly. Records the tile shapes it was given."""

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.weight = torch.nn.Parameter(torch.zeros(4))
        self.tiles: list[tuple[int, ...]] = []

    def parameters(self):
        return iter([self.weight])

    def buffers(self):
        return iter(())

    def to(self, device):
        return self

    def run(self, batch):
        self.tiles.append(tuple(batch.shape))
        return batch.repeat_interleave(self.scale, 2).repeat_interleave(self.scale, 3)


class TileMarker(Nearest):
    """Paints each tile's output with its call number (x 40), to show which tile every output pixel is from."""

    def run(self, batch):
        super().run(batch)
        _, channels, height, width = batch.shape
        return torch.full((1, channels, height * self.scale, width * self.scale), len(self.tiles) * 40 / 255.0)


@pytest.fixture
def stand_in(monkeypatch, tmp_path, run):
    """Installs stand-in models: spandrel's recognition and loading replaced, the rest (probe, registry,
    model cache, node) as it is. Returns install(network, name) -> the model identifier."""
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    networks: dict[str, Nearest] = {}
    monkeypatch.setattr(spandrel_model, "unavailable_reason", lambda: None)
    monkeypatch.setattr(spandrel_model, "identify", lambda path: "StandIn" if path.stem in networks else None)
    monkeypatch.setattr(spandrel_model, "load", lambda path, dtype: networks[path.stem])
    manager = ModelManager(ModelRegistry(str(tmp_path / "models")), device="cpu")
    run.services["models"] = manager

    def install(network: Nearest, name: str):
        networks[name] = network
        source = tmp_path / f"{name}.safetensors"
        from safetensors.torch import save_file

        save_file({"body.0.weight": torch.full((1,), float(len(networks)))}, str(source))  # a file (hash) each
        return install_model(manager.registry, str(source), name=name).identifier()

    return install


def upscale_node(run, model, image, **fields):
    out = only_output(run, {"type": "spandrel_image_to_image", "image": put_image(run, "in.png", image),
                            "image_to_image_model": model, **fields})
    return out, np.asarray(stored_image(run, out))


def autoscale_node(run, model, image, **fields):
    out = only_output(run, {"type": "spandrel_image_to_image_autoscale", "image": put_image(run, "in.png", image),
                            "image_to_image_model": model, **fields})
    return out, stored_image(run, out)


def test_installed_as_a_spandrel_model_and_tiled_runs_equal_the_whole_image(run, stand_in):
    network = Nearest(2)
    model = stand_in(network, "nearest-x2")
    record = run.services["models"].registry.get(model["key"])
    assert (model["type"], model["base"], record.format.value) == ("spandrel_image_to_image", "any", "checkpoint")
    image = photo(70, 100)
    whole, pixels = upscale_node(run, model, image, tile_size=0)
    assert (whole.width, whole.height) == (200, 140) and pixels.shape == (140, 200, 3)
    assert np.array_equal(pixels, image.repeat(2, 0).repeat(2, 1))
    assert network.tiles == [(1, 3, 70, 100)]
    network.tiles.clear()
    _, tiled = upscale_node(run, model, image, tile_size=32)
    assert np.array_equal(tiled, pixels)
    # 70 rows: ceil((70 - 20) / (32 - 20)) = 5 tiles; 100 columns: 7
    assert len(network.tiles) == 5 * 7 and all(shape[2:] == (32, 32) for shape in network.tiles)
    network.tiles.clear()
    _, fits = upscale_node(run, model, image)  # default 512: one tile, the whole image
    assert np.array_equal(fits, pixels) and network.tiles == [(1, 3, 70, 100)]


def test_each_tile_keeps_its_overlap_but_the_first_half(run, stand_in):
    # 60 wide, tiles of 40 with at least 20 overlap: [0, 40) and [20, 60); the second is pasted from 20 + 10.
    model = stand_in(TileMarker(1), "marker")
    _, pixels = upscale_node(run, model, photo(30, 60), tile_size=40)
    assert (pixels[:, :30] == 40).all() and (pixels[:, 30:] == 80).all()
    # and with a scale of 3 the overlap is scaled first: column 90 = 30 * 3 is where the second tile starts
    model = stand_in(TileMarker(3), "marker3")
    _, pixels = upscale_node(run, model, photo(30, 60), tile_size=40)
    assert pixels.shape == (90, 180, 3) and (pixels[:, :90] == 40).all() and (pixels[:, 90:] == 80).all()


def test_tiles_are_taken_left_to_right_top_to_bottom(run, stand_in):
    network = TileMarker(1)
    _, pixels = upscale_node(run, stand_in(network, "marker"), photo(60, 60), tile_size=40)
    assert [pixels[5, 5, 0], pixels[5, 55, 0], pixels[55, 5, 0], pixels[55, 55, 0]] == [40, 80, 120, 160]


def test_progress_is_reported_per_tile(run, stand_in):
    events = []
    run.on_progress = events.append
    upscale_node(run, stand_in(Nearest(2), "nearest"), photo(60, 60), tile_size=40)
    assert [e["message"] for e in events] == [f"Processing tile {i}/4" for i in range(5)]
    assert events[-1]["percentage"] == 1.0


def test_autoscale_runs_the_upscaler_until_the_scale_is_reached(run, stand_in):
    network = Nearest(2)
    model = stand_in(network, "nearest-x2")
    image = photo(20, 30)
    out, result = autoscale_node(run, model, image, scale=4.0)
    assert result.size == (120, 80) and len(network.tiles) == 2  # 2x, then 2x again
    assert np.array_equal(np.asarray(result), image.repeat(4, 0).repeat(4, 1))
    network.tiles.clear()
    _, result = autoscale_node(run, model, image, scale=3.0)  # 4x, then Lanczos down to 3x
    assert result.size == (90, 60) and len(network.tiles) == 2
    network.tiles.clear()
    _, result = autoscale_node(run, model, image, scale=1.5)  # one 2x pass, then down to 1.5x
    assert result.size == (45, 30) and len(network.tiles) == 1
    _, result = autoscale_node(run, model, photo(21, 35), scale=1.5, fit_to_multiple_of_8=True)
    assert result.size == (48, 24)  # 52x31 -> multiples of 8, rounded down


def test_autoscale_takes_the_passes_the_scale_needs_and_a_restorer_one(run, stand_in, caplog):
    network = Nearest(2)
    with caplog.at_level(logging.WARNING):
        _, result = autoscale_node(run, stand_in(network, "nearest"), photo(1, 1), scale=16.0)
    # 2^4 = 16 is reached in 4 passes: no warning
    assert result.size == (16, 16) and len(network.tiles) == 4 and "stopped after" not in caplog.text
    restorer = Nearest(1)
    _, result = autoscale_node(run, stand_in(restorer, "restorer"), photo(10, 12), scale=16.0)
    assert result.size == (12, 10) and len(restorer.tiles) == 1  # not an upscaler: the scale is ignored
    assert "does not enlarge the image" in caplog.text


@pytest.mark.parametrize("tile_size,match", [(-1, "tile_size: expected 0"), (20, "tile_size: expected 0 .* more than")])
def test_bad_tile_sizes_are_refused_by_name(run, stand_in, tile_size, match):
    with pytest.raises(NodeExecutionError, match=match):
        upscale_node(run, stand_in(Nearest(2), "n"), photo(8, 8), tile_size=tile_size)


def test_autoscale_scale_is_checked_by_the_field_rules(run, stand_in):
    model = stand_in(Nearest(2), "n")
    for scale in (0, 17):
        with pytest.raises(NodeValidationError, match="scale"):
            autoscale_node(run, model, photo(8, 8), scale=scale)


def test_another_kind_of_model_is_refused(run, stand_in, tiny_registry):
    main = tiny_registry.find("tiny-sd1").identifier()
    with pytest.raises(NodeExecutionError, match=r"field image_to_image_model: expected a spandrel_image_to_image "
                                                 r"model, got .* of type main"):
        upscale_node(run, main, photo(8, 8))


def test_without_spandrel_the_node_says_what_to_install(run, stand_in, monkeypatch):
    model = stand_in(Nearest(2), "n")
    monkeypatch.setattr(spandrel_model, "unavailable_reason", lambda: "ModuleNotFoundError: No module named 'spandrel'")
    with pytest.raises(NodeExecutionError, match=r"field image_to_image_model: spandrel cannot be imported "
                                                 r"\(ModuleNotFoundError.*\[spandrel\]"):
        upscale_node(run, model, photo(8, 8))


def test_a_network_that_does_not_scale_as_it_says_is_a_clear_error(run, stand_in):
    class Liar(Nearest):
        def run(self, batch):
            return super().run(batch)[..., :-1]

    with pytest.raises(NodeExecutionError, match=r"field image_to_image_model: .*tile came out 15x16, not 2x"):
        upscale_node(run, stand_in(Liar(2), "liar"), photo(8, 8))


def test_probe_error_says_spandrel_is_missing_when_it_is(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from invokeai_provider.models.model_manager.probe import ProbeError, probe

    path = tmp_path / "upscaler.safetensors"
    save_file({"body.0.weight": torch.zeros(1)}, str(path))
    monkeypatch.setattr(spandrel_model, "unavailable_reason", lambda: "RuntimeError: operator torchvision::nms")
    monkeypatch.setattr(spandrel_model, "identify", lambda path: None)
    with pytest.raises(ProbeError, match=r"spandrel, which recognises upscaler checkpoints, cannot be imported "
                                         r"\(RuntimeError: operator torchvision::nms\)"):
        probe(path)


# --- real spandrel -----------------------------------------------------------------------------------------


def _compact(scale: int, seed: int = 0):
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    return Compact(num_feat=8, num_conv=2, upscale=scale)


def _esrgan(seed: int = 0):
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    return ESRGAN(num_filters=8, num_blocks=1, scale=4)


@pytest.fixture
def spandrel_run(tmp_path, run):
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    run.services["models"] = ModelManager(ModelRegistry(str(tmp_path / "models")), device="cpu")
    return run


def _install(run, tmp_path, net, name):
    from safetensors.torch import save_file

    from invokeai_provider.models.model_manager.install import install_model

    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return install_model(run.services["models"].registry, str(path), name=name).identifier(), path


def _direct(path, image):
    """spandrel's own run of the whole image, as the node rounds it."""
    from spandrel import ModelLoader

    descriptor = ModelLoader().load_from_file(str(path)).eval()
    batch = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    with torch.inference_mode():
        out = descriptor(batch)[0].permute(1, 2, 0).clamp(0, 1).numpy()
    return (out * 255.0).round().astype(np.uint8), descriptor


@needs_spandrel
@pytest.mark.parametrize("build,scale,arch", [(lambda: _compact(2), 2, "RealESRGAN Compact"),
                                              (_esrgan, 4, "ESRGAN")])
def test_real_architectures_install_and_run_as_spandrel_runs_them(spandrel_run, tmp_path, build, scale, arch):
    model, path = _install(spandrel_run, tmp_path, build(), "tiny")
    assert model["type"] == "spandrel_image_to_image" and model["base"] == "any"
    image = photo(48, 40)
    expected, descriptor = _direct(path, image)
    assert descriptor.scale == scale and arch in descriptor.architecture.name
    _, whole = upscale_node(spandrel_run, model, image, tile_size=0)
    assert whole.shape == (48 * scale, 40 * scale, 3) and np.array_equal(whole, expected)
    _, tiled = upscale_node(spandrel_run, model, image, tile_size=32)
    # the kept part of every tile is 10 input pixels from its cut edges, beyond these nets' receptive field
    assert np.abs(tiled.astype(int) - expected).max() <= 1


@needs_spandrel
def test_real_restorer_autoscale_keeps_the_size(spandrel_run, tmp_path):
    model, path = _install(spandrel_run, tmp_path, _compact(1), "restorer")
    image = photo(24, 32)
    expected, descriptor = _direct(path, image)
    assert descriptor.scale == 1
    _, result = autoscale_node(spandrel_run, model, image, scale=4.0)
    assert result.size == (32, 24) and np.array_equal(np.asarray(result), expected)


@needs_spandrel
def test_a_file_spandrel_does_not_know_is_not_installed(spandrel_run, tmp_path):
    from safetensors.torch import save_file

    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.probe import ProbeError

    path = tmp_path / "mystery.safetensors"
    save_file({"mystery.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(ProbeError, match="not a model this provider recognises"):
        install_model(spandrel_run.services["models"].registry, str(path))
