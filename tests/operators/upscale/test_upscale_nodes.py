"""esrgan: the declaration matches InvokeAI 6.11; RRDBNet has the published checkpoints' layouts (x4plus,
anime 6B, the official ESRGAN, x2plus with its space-to-depth input); seeded random-weight checkpoints under
``<model root>/core/upscaling/realesrgan`` upscale 4x / 2x into opaque RGBA, tiled as untiled."""

from __future__ import annotations

import typing

import pytest

from helpers import only_output, put_image, stored_image

from invokeai_provider.errors import NodeExecutionError, NodeValidationError
from invokeai_provider.core.registry import InvocationRegistry

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

FOLDER = "core/upscaling/realesrgan"
X4 = "RealESRGAN_x4plus.pth"
ANIME = "RealESRGAN_x4plus_anime_6B.pth"
OFFICIAL = "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth"
X2 = "RealESRGAN_x2plus.pth"


def _photo(width=16, height=16, seed=0, channels=3):
    rng = np.random.RandomState(seed)
    return (rng.rand(height, width, channels) * 255).astype("uint8")


_STATES: dict[tuple[str, int], dict] = {}


def _state_dict(model_name=ANIME, seed=0):
    """A seeded random net of the file's layout; conv_last's bias at 0.5 keeps the output mid-range rather
    than clamped at black."""
    key = (model_name, seed)
    if key not in _STATES:
        from invokeai_provider.models.upscalers.rrdb import build_esrgan

        torch.manual_seed(seed)
        net = build_esrgan(model_name)
        with torch.no_grad():
            net.conv_last.bias.fill_(0.5)
        _STATES[key] = net.state_dict()
    return _STATES[key]


@pytest.fixture
def models_run(tmp_path, run):
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    run.services["models"] = ModelManager(ModelRegistry(str(tmp_path / "models")), device="cpu")
    return run


def _root(models_run):
    return models_run.services["models"].registry.root


def _install(models_run, model_name=ANIME, checkpoint=None, name=None, key="params_ema"):
    """Writes the checkpoint as BasicSR does (the state dict under ``key``; None: the bare state dict)."""
    path = _root(models_run) / FOLDER / (name or model_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if checkpoint is None:
        state = _state_dict(model_name)
        checkpoint = state if key is None else {key: state}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(checkpoint, str(path))
    else:
        torch.save(checkpoint, path)
    return path


def _esrgan(models_run, image=None, mode=None, **fields):
    image = _photo() if image is None else image
    out = only_output(models_run, {"type": "esrgan", "image": put_image(models_run, "in.png", image, mode),
                                   **fields})
    return out, stored_image(models_run, out)


# --- declaration ----------------------------------------------------------------------------------------


def test_declaration_matches_invokeai():
    cls = InvocationRegistry.get_invocation_class("esrgan")
    ui = cls.UIConfig
    assert (ui.title, ui.version, ui.category, ui.tags) == ("Upscale (RealESRGAN)", "1.3.2", "upscale",
                                                            ["esrgan", "upscale"])
    assert ui.gpu
    assert cls.get_output_annotation().get_type() == "image_output"
    fields = cls.input_fields()
    assert list(fields) == ["board", "metadata", "image", "model_name", "tile_size"]
    assert fields["model_name"].default == X4
    assert typing.get_args(fields["model_name"].annotation) == (X4, ANIME, OFFICIAL, X2)
    assert fields["tile_size"].default == 400



# --- network --------------------------------------------------------------------------------------------


def test_networks_have_the_published_checkpoint_layouts():
    from invokeai_provider.models.upscalers.rrdb import build_esrgan

    x4 = build_esrgan(X4).state_dict()
    assert len(x4) == 2 + 23 * 3 * 5 * 2 + 5 * 2 == 702  # conv_first, the body, conv_body, up1, up2, hr, last
    assert sum(v.numel() for v in x4.values()) == 16_697_987
    shapes = {"conv_first.weight": (64, 3, 3, 3), "body.0.rdb1.conv1.weight": (32, 64, 3, 3),
              "body.0.rdb1.conv2.weight": (32, 96, 3, 3), "body.22.rdb3.conv5.weight": (64, 192, 3, 3),
              "body.22.rdb3.conv5.bias": (64,), "conv_body.weight": (64, 64, 3, 3),
              "conv_up1.weight": (64, 64, 3, 3), "conv_up2.bias": (64,), "conv_hr.weight": (64, 64, 3, 3),
              "conv_last.weight": (3, 64, 3, 3), "conv_last.bias": (3,)}
    assert {k: tuple(x4[k].shape) for k in shapes} == shapes
    assert {k: v.shape for k, v in build_esrgan(OFFICIAL).state_dict().items()} == {k: v.shape for k, v in x4.items()}

    anime = build_esrgan(ANIME).state_dict()
    assert "body.5.rdb3.conv5.weight" in anime and not any(k.startswith("body.6.") for k in anime)
    x2 = build_esrgan(X2).state_dict()
    assert tuple(x2["conv_first.weight"].shape) == (64, 12, 3, 3)  # 2x2 space-to-depth of RGB
    assert set(x2) == set(x4)


def test_space_to_depth_orders_channels_as_basicsr():
    """BasicSR's pixel_unshuffle: channel c * 4 + dy * 2 + dx holds pixel (2y + dy, 2x + dx) of channel c."""
    from invokeai_provider.models.upscalers.rrdb import build_esrgan

    net = build_esrgan(X2).eval()
    seen = {}
    net.conv_first.register_forward_hook(lambda module, args, out: seen.update({"in": args[0]}))
    x = torch.rand(1, 3, 6, 8)
    with torch.no_grad():
        net(x)
    expected = x.view(1, 3, 3, 2, 4, 2).permute(0, 1, 3, 5, 2, 4).reshape(1, 12, 3, 4)
    assert torch.equal(seen["in"], expected)


def test_output_is_scale_times_the_input_in_range():
    from invokeai_provider.models.upscalers.rrdb import RRDBNet, upscale

    torch.manual_seed(0)
    for scale, size in ((4, (13, 11)), (2, (13, 11)), (1, (13, 11))):
        net = RRDBNet(scale=scale, blocks=1).eval()
        out = upscale(net, torch.rand(1, 3, *size))
        assert tuple(out.shape) == (1, 3, 13 * scale, 11 * scale)
        assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_checkpoint_unwrapping_prefers_params_ema():
    from invokeai_provider.models.upscalers.rrdb import unwrap_checkpoint

    ema, plain = {"a": torch.ones(1)}, {"a": torch.zeros(1)}
    assert unwrap_checkpoint({"params": plain, "params_ema": ema}) is ema
    assert unwrap_checkpoint({"params": plain}) is plain
    assert unwrap_checkpoint(plain) is plain
    assert unwrap_checkpoint({"params_ema.a": ema["a"]}) == {"a": ema["a"]}  # a flattened .safetensors twin


def test_tiles_are_stitched_to_the_untiled_result():
    """The tiles overlap by 10 px of context; for this seeded net that context covers what reaches each
    pixel, so the stitched image matches the whole-image pass (float rounding aside)."""
    from invokeai_provider.models.upscalers.rrdb import RRDBNet, build_esrgan, upscale

    anime = build_esrgan(ANIME).eval()
    anime.load_state_dict(_state_dict(ANIME))
    torch.manual_seed(0)
    x2 = RRDBNet(scale=2, blocks=2).eval()  # the x2 path's tiling; two blocks keep it quick
    for net in (anime, x2):
        calls = []
        net.conv_first.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape[-2:])))
        image = torch.rand(1, 3, 14, 19, generator=torch.Generator().manual_seed(1))
        whole = upscale(net, image, 0)
        assert len(calls) == 1
        for tile_size in (8, 7):  # 7: odd tiles, which the x2 net's space-to-depth can't take as they are
            calls.clear()
            tiled = upscale(net, image, tile_size)
            assert len(calls) > 4
            assert float((tiled - whole).abs().max()) < 5e-3
        calls.clear()
        assert torch.equal(upscale(net, image, 64), whole) and len(calls) == 1  # one tile: the same pass


# --- the node -------------------------------------------------------------------------------------------


def test_x4plus_upscales_4x_into_opaque_rgba(models_run):
    _install(models_run, X4)
    out, image = _esrgan(models_run, tile_size=0)
    assert image.mode == "RGBA" and image.size == (64, 64) == (out.width, out.height)
    pixels = np.asarray(image)
    assert (pixels[..., 3] == 255).all()
    assert pixels[..., :3].std() > 10  # not a flat colour
    _, again = _esrgan(models_run, tile_size=0)
    assert np.array_equal(pixels, np.asarray(again))


def test_x2plus_upscales_2x_at_odd_sizes(models_run):
    _install(models_run, X2)
    out, image = _esrgan(models_run, image=_photo(15, 13), model_name=X2)
    assert image.mode == "RGBA" and image.size == (30, 26) == (out.width, out.height)


def test_node_tiled_matches_untiled(models_run):
    _install(models_run, ANIME)
    _, whole = _esrgan(models_run, image=_photo(20, 14), model_name=ANIME, tile_size=0)
    _, tiled = _esrgan(models_run, image=_photo(20, 14), model_name=ANIME, tile_size=8)
    diff = np.abs(np.asarray(whole).astype(int) - np.asarray(tiled).astype(int))
    assert diff.max() <= 1
    _, default = _esrgan(models_run, image=_photo(20, 14), model_name=ANIME)  # tile 400 > image: untiled
    assert np.array_equal(np.asarray(whole), np.asarray(default))


def test_alpha_is_dropped_and_output_opaque_as_in_invokeai(models_run):
    _install(models_run, ANIME)
    rgba = _photo(channels=4)
    rgba[..., 3] = np.linspace(0, 255, 16, dtype=np.uint8)[None, :]
    _, from_rgba = _esrgan(models_run, image=rgba, model_name=ANIME)
    _, from_rgb = _esrgan(models_run, image=rgba[..., :3], model_name=ANIME)
    assert np.array_equal(np.asarray(from_rgba), np.asarray(from_rgb))
    assert (np.asarray(from_rgba)[..., 3] == 255).all()
    grey = _photo(channels=1)[..., 0]
    _, from_grey = _esrgan(models_run, image=grey, model_name=ANIME)
    _, grey_as_rgb = _esrgan(models_run, image=np.repeat(grey[..., None], 3, 2), model_name=ANIME)
    assert from_grey.mode == "RGBA" and np.array_equal(np.asarray(from_grey), np.asarray(grey_as_rgb))


def test_each_model_name_loads_its_own_file(models_run):
    _install(models_run, ANIME)
    _install(models_run, OFFICIAL, checkpoint={"params": _state_dict(X4, seed=3)})  # the official one: "params"
    _, anime = _esrgan(models_run, model_name=ANIME)
    _, official = _esrgan(models_run, model_name=OFFICIAL)
    assert anime.size == official.size == (64, 64)
    assert not np.array_equal(np.asarray(anime), np.asarray(official))


def test_bare_state_dict_and_safetensors_twin_load_the_same_weights(models_run):
    path = _install(models_run, ANIME)
    _, reference = _esrgan(models_run, model_name=ANIME)
    path.unlink()
    _install(models_run, ANIME, key=None)
    _, bare = _esrgan(models_run, model_name=ANIME)
    assert np.array_equal(np.asarray(reference), np.asarray(bare))
    path.unlink()
    _install(models_run, ANIME, name="RealESRGAN_x4plus_anime_6B.safetensors", key=None)
    _, twin = _esrgan(models_run, model_name=ANIME)
    assert np.array_equal(np.asarray(reference), np.asarray(twin))


def test_missing_checkpoint_names_node_field_and_file(models_run):
    _install(models_run, ANIME)  # another model's file is no substitute
    with pytest.raises(NodeExecutionError, match=r"node n \(esrgan\): field model_name: no model at "
                                                 r".*core/upscaling/realesrgan \(missing RealESRGAN_x4plus\.pth\)"):
        _esrgan(models_run)


def test_wrong_checkpoint_names_node_field_and_file(models_run):
    # the anime net's weights under the x4plus name: 6 blocks, not 23
    _install(models_run, X4, checkpoint={"params_ema": _state_dict(ANIME)})
    with pytest.raises(NodeExecutionError, match=r"node n \(esrgan\): field model_name: .*RealESRGAN_x4plus\.pth "
                                                 r"does not fit the RRDBNet network: missing keys 510 \(e\.g\. body\.10"):
        _esrgan(models_run)
    # the x4 weights under the x2 name: conv_first takes 3 channels, not 12
    _install(models_run, X2, checkpoint={"params": _state_dict(ANIME)})
    with pytest.raises(NodeExecutionError, match=r"field model_name: .*RealESRGAN_x2plus\.pth does not fit .*keys "
                                                 r"of another shape 1 \(e\.g\. conv_first\.weight\)"):
        _esrgan(models_run, model_name=X2)


def test_bad_fields_are_refused(models_run):
    _install(models_run, ANIME)
    with pytest.raises(NodeValidationError, match=r"node n \(esrgan\): field \"tile_size\" .*greater than or "
                                                  r"equal to 0"):
        _esrgan(models_run, model_name=ANIME, tile_size=-1)
    with pytest.raises(NodeValidationError, match=r"node n \(esrgan\): field \"model_name\""):
        _esrgan(models_run, model_name="RealESRGAN_x8.pth")
