"""pbr_maps: the declaration and the ``pbr_maps-output`` output match InvokeAI 6.11; the RRDB generator has the
layout of the ``InvokeAI/pbr-material-maps`` checkpoints; seeded random-weight checkpoints, saved as
``normal_map_generator.safetensors`` / ``franken_map_generator.safetensors`` under
``<model root>/core/InvokeAI/pbr-material-maps``, give three maps of the input's size whose pixels are the
networks' outputs for the BGR input (normal: all three channels; roughness / displacement: channel 1 / 2 of
the second network, as grey images), with tiling and border padding done as InvokeAI does them."""

from __future__ import annotations


import pytest

from helpers import only_output, put_image, stored_image

from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.core.registry import InvocationRegistry

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
Image = pytest.importorskip("PIL.Image")

FOLDER = "core/InvokeAI/pbr-material-maps"
NORMAL = "normal_map_generator.safetensors"
OTHER = "franken_map_generator.safetensors"


def _texture(width=40, height=32, seed=0):
    rng = np.random.RandomState(seed)
    pixels = (rng.rand(height, width, 3) * 255).astype("uint8")
    pixels[height // 4:height // 2, width // 4:3 * width // 4] = (200, 180, 40)
    return pixels


def _seeded_net(seed):
    """A full-size generator with seeded random weights; the output conv's bias is centred in [0, 1] so the
    clamped outputs vary instead of sitting at 0."""
    from invokeai_provider.models.upscalers.pbr import PBRNet

    torch.manual_seed(seed)
    net = PBRNet().eval()
    with torch.no_grad():
        net.model[4].weight.mul_(4.0)
        net.model[4].bias.copy_(torch.tensor([0.5, 0.4, 0.6]))
    return net


@pytest.fixture(scope="module")
def nets():
    return _seeded_net(0), _seeded_net(1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, nets):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("pbr")
    for net, name in zip(nets, (NORMAL, OTHER)):
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / name))
    return folder


@pytest.fixture
def models_run(tmp_path, run):
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    run.services["models"] = ModelManager(ModelRegistry(str(tmp_path / "models")), device="cpu")
    return run


def _install(models_run, checkpoints, names=(NORMAL, OTHER)):
    folder = models_run.services["models"].registry.root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).symlink_to(checkpoints / name)
    return folder


def _pbr(models_run, image=None, **fields):
    image = _texture() if image is None else image
    out = only_output(models_run, {"type": "pbr_maps", "image": put_image(models_run, "in.png", image), **fields})
    return out, [np.asarray(stored_image(models_run, getattr(out, name)))
                 for name in ("normal_map", "roughness_map", "displacement_map")]


def _expected(net, rgb):
    """The network's output for the image, computed here from first principles: BGR floats in [0, 1] in,
    clamped, scaled to 0..255 and rounded."""
    x = torch.from_numpy(rgb[..., ::-1].astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = net(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    return np.round(y * 255.0).astype(np.uint8)


# --- declaration ----------------------------------------------------------------------------------------


def test_declaration_matches_invokeai():
    cls = InvocationRegistry.get_invocation_class("pbr_maps")
    ui = cls.UIConfig
    assert (ui.title, ui.version, ui.category, ui.tags) == ("PBR Maps", "1.0.0", "image", ["image", "material"])
    assert ui.gpu
    fields = cls.input_fields()
    assert list(fields) == ["board", "metadata", "image", "tile_size", "border_mode"]
    assert fields["tile_size"].default == 512 and fields["border_mode"].default == "none"
    output = cls.get_output_annotation()
    assert output.get_type() == "pbr_maps-output"
    assert [k for k in output.model_fields if k != "type"] == ["normal_map", "roughness_map", "displacement_map"]
    with pytest.raises(Exception):
        cls(id="n", image={"image_name": "x"}, border_mode="wrap")



# --- network --------------------------------------------------------------------------------------------


def test_network_has_the_published_checkpoint_layout():
    from invokeai_provider.models.upscalers.pbr import PBRNet

    state = PBRNet().state_dict()
    assert len(state) == 12 * 3 * 5 * 2 + 8
    shapes = {"model.0.weight": (32, 3, 3, 3),
              "model.1.sub.0.RDB1.conv1.0.weight": (32, 32, 3, 3),
              "model.1.sub.0.RDB1.conv4.0.weight": (32, 128, 3, 3),
              "model.1.sub.11.RDB3.conv5.0.weight": (32, 160, 3, 3),
              "model.1.sub.11.RDB3.conv5.0.bias": (32,),
              "model.1.sub.12.weight": (32, 32, 3, 3),
              "model.2.weight": (32, 32, 3, 3),
              "model.4.weight": (3, 32, 3, 3),
              "model.4.bias": (3,)}
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    assert "model.1.sub.12.0.weight" not in state and "model.3.weight" not in state


def test_tiles_keep_only_their_own_square_of_a_padded_crop():
    from invokeai_provider.models.upscalers.pbr import PBRNet, _predict, run_tiled

    torch.manual_seed(3)
    net = PBRNet(features=4, blocks=1, growth=4).eval()
    rgb = _texture(37, 29)
    whole = run_tiled(net, rgb, 64)
    assert np.array_equal(whole, _predict(net, rgb)) and whole.shape == (29, 37, 3)
    tiled = run_tiled(net, rgb, 16)  # a 2 x 3 grid; margin ceil(16 / 8) = 2
    assert tiled.shape == (29, 37, 3)
    assert np.array_equal(tiled[16:29, 16:32], _predict(net, rgb[14:29, 14:34])[2:15, 2:18])
    assert np.array_equal(tiled[0:16, 32:37], _predict(net, rgb[0:18, 30:37])[0:16, 2:7])
    assert not np.array_equal(tiled, whole)  # the convs see less context at the tile edges


def test_border_padding_is_opencvs_wrap_mirror_and_replicate():
    from invokeai_provider.operators.image.pbr_maps import pad_borders

    rgb = _texture(20, 18)
    assert pad_borders(rgb, "none") is rgb
    wrapped, mirrored, replicated = (pad_borders(rgb, mode) for mode in ("seamless", "mirror", "replicate"))
    assert wrapped.shape == mirrored.shape == replicated.shape == (50, 52, 3)
    assert np.array_equal(wrapped[:16, 16:36], rgb[-16:]) and np.array_equal(wrapped[16:34, :16], rgb[:, -16:])
    assert np.array_equal(mirrored[15, 16:36], rgb[1]) and np.array_equal(mirrored[0, 16:36], rgb[16])
    assert (replicated[:16, 16:36] == rgb[0]).all() and (replicated[16:34, -16:] == rgb[:, -1:]).all()
    cv2 = pytest.importorskip("cv2")
    for mode, border in (("seamless", cv2.BORDER_WRAP), ("mirror", cv2.BORDER_REFLECT_101),
                         ("replicate", cv2.BORDER_REPLICATE)):
        assert np.array_equal(pad_borders(rgb, mode), cv2.copyMakeBorder(rgb, 16, 16, 16, 16, border))


# --- the node -------------------------------------------------------------------------------------------


def test_maps_are_the_networks_outputs_at_the_input_size(models_run, checkpoints, nets):
    _install(models_run, checkpoints)
    rgb = _texture(37, 29)
    out, (normal, roughness, displacement) = _pbr(models_run, rgb)
    for array in (normal, roughness, displacement):
        assert array.shape == (29, 37, 3) and array.dtype == np.uint8
    assert np.array_equal(normal, _expected(nets[0], rgb))
    other = _expected(nets[1], rgb)
    assert np.array_equal(roughness, np.repeat(other[..., 1:2], 3, axis=2))
    assert np.array_equal(displacement, np.repeat(other[..., 2:3], 3, axis=2))
    assert len(np.unique(normal.reshape(-1, 3), axis=0)) > 50  # a map, not one colour
    assert not np.array_equal(roughness, displacement)
    _, again = _pbr(models_run, rgb)
    assert all(np.array_equal(a, b) for a, b in zip((normal, roughness, displacement), again))


def test_small_tile_size_tiles_and_border_modes_pad_then_crop(models_run, checkpoints, nets):
    from invokeai_provider.models.upscalers.pbr import run_tiled
    from invokeai_provider.operators.image.pbr_maps import pad_borders

    _install(models_run, checkpoints)
    rgb = _texture(24, 20)
    _, (plain, *_) = _pbr(models_run, rgb)
    _, (tiled, *_) = _pbr(models_run, rgb, tile_size=12)
    assert tiled.shape == plain.shape and np.array_equal(tiled, run_tiled(nets[0], rgb, 12))
    assert not np.array_equal(tiled, plain)
    results = {}
    for mode in ("seamless", "mirror", "replicate"):
        _, (normal, roughness, _) = _pbr(models_run, rgb, border_mode=mode)
        assert normal.shape == (20, 24, 3)
        padded = pad_borders(rgb, mode)
        assert np.array_equal(normal, run_tiled(nets[0], padded, 512)[16:-16, 16:-16])
        assert np.array_equal(roughness[..., 0], run_tiled(nets[1], padded, 512)[16:-16, 16:-16, 1])
        results[mode] = normal
    assert not np.array_equal(results["seamless"], plain)
    assert not np.array_equal(results["seamless"], results["mirror"])


def test_tile_size_below_one_is_a_clear_error(models_run, checkpoints):
    _install(models_run, checkpoints)
    with pytest.raises(NodeExecutionError, match=r"node n \(pbr_maps\): field tile_size: must be at least 1"):
        _pbr(models_run, tile_size=0)


def test_missing_checkpoint_names_node_field_and_file(models_run, checkpoints):
    with pytest.raises(NodeExecutionError, match=r"node n \(pbr_maps\): field image: no model at "
                                                 r".*core/InvokeAI/pbr-material-maps \(missing "
                                                 r"normal_map_generator\.safetensors\)"):
        _pbr(models_run)
    _install(models_run, checkpoints, names=(NORMAL,))
    with pytest.raises(NodeExecutionError, match=r"\(missing franken_map_generator\.safetensors\): put the PBR "
                                                 r"roughness/displacement generator"):
        _pbr(models_run, _texture(8, 8))


def test_wrong_checkpoint_names_node_field_and_file(models_run, checkpoints):
    from safetensors.torch import save_file

    folder = _install(models_run, checkpoints, names=(OTHER,))
    save_file({"model.0.weight": torch.zeros(64, 3, 3, 3), "conv_first.weight": torch.zeros(1)},
              str(folder / NORMAL))
    with pytest.raises(NodeExecutionError, match=r"node n \(pbr_maps\): field image: .*normal_map_generator"
                                                 r"\.safetensors does not fit the PBRNet network: missing keys 367 "
                                                 r".*unexpected keys 1 \(e\.g\. conv_first\.weight\); keys of "
                                                 r"another shape 1 \(e\.g\. model\.0\.weight\)"):
        _pbr(models_run)
    (folder / NORMAL).write_bytes(b"not a checkpoint")
    with pytest.raises(NodeExecutionError, match=r"field image: cannot read .*normal_map_generator\.safetensors"):
        _pbr(models_run)
