"""normal_map: the declaration matches InvokeAI 6.11; the NormalBae network (EfficientNet-B5 encoder +
decoder) has the ``scannet.pt`` checkpoint's layout; a seeded random-weight checkpoint, saved as scannet.pt
is (``{"model": {"module.<key>": ...}}``) under ``<model root>/core/lllyasviel/Annotators``, gives RGB normal
maps of the input's size whose pixels decode to unit vectors."""

from __future__ import annotations


import pytest

from helpers import only_output, put_image, stored_image

from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.core.registry import InvocationRegistry

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
pytest.importorskip("cv2")
Image = pytest.importorskip("PIL.Image")

ANNOTATORS = "core/lllyasviel/Annotators"


def _photo(width=64, height=64, seed=0):
    rng = np.random.RandomState(seed)
    pixels = (rng.rand(height, width, 3) * 255).astype("uint8")
    pixels[height // 4:height // 2, width // 4:3 * width // 4] = (200, 180, 40)
    return pixels



@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The full-size network with seeded random weights, saved once as scannet.pt is laid out and as a flat
    .safetensors; the tests link them into their model roots. Variance-keeping (He) conv weights without
    biases and varied batch-norm statistics, so the ~100 layers don't wash the image out to a constant."""
    from safetensors.torch import save_file

    from invokeai_provider.models.annotators.normal_bae import NormalBaeNet

    torch.manual_seed(0)
    net = NormalBaeNet().eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Conv1d)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    module.bias.zero_()
    state = net.state_dict()
    folder = tmp_path_factory.mktemp("normal_bae")
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, folder / "scannet.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "scannet.safetensors"))
    return folder


@pytest.fixture
def models_run(tmp_path, run):
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    run.services["models"] = ModelManager(ModelRegistry(str(tmp_path / "models")), device="cpu")
    return run


def _install(models_run, source, name="scannet.pt"):
    target = models_run.services["models"].registry.root / ANNOTATORS / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, dict):
        torch.save(source, target)
    else:
        target.symlink_to(source)
    return target


def _normal_map(models_run, image=None):
    image = _photo() if image is None else image
    out = only_output(models_run, {"type": "normal_map", "image": put_image(models_run, "in.png", image)})
    return out, stored_image(models_run, out)


def _decoded(image):
    return np.asarray(image, dtype=np.float64) / 255.0 * 2.0 - 1.0


# --- declaration ----------------------------------------------------------------------------------------


def test_declaration_matches_invokeai():
    cls = InvocationRegistry.get_invocation_class("normal_map")
    ui = cls.UIConfig
    assert (ui.title, ui.version, ui.category, ui.tags) == ("Normal Map", "1.0.0", "controlnet",
                                                            ["controlnet", "normal"])
    assert ui.gpu
    assert cls.get_output_annotation().get_type() == "image_output"
    assert list(cls.input_fields()) == ["board", "metadata", "image"]



# --- network --------------------------------------------------------------------------------------------


def test_network_has_the_scannet_checkpoint_layout():
    from invokeai_provider.models.annotators.normal_bae import NormalBaeNet

    net = NormalBaeNet()
    state = net.state_dict()
    assert len(state) == 936
    encoder = "encoder.original_model."
    shapes = {f"{encoder}conv_stem.weight": (48, 3, 3, 3),
              f"{encoder}blocks.0.0.conv_dw.weight": (48, 1, 3, 3),
              f"{encoder}blocks.0.0.se.conv_reduce.weight": (12, 48, 1, 1),
              f"{encoder}blocks.0.0.conv_pw.weight": (24, 48, 1, 1),
              f"{encoder}blocks.1.0.conv_pw.weight": (144, 24, 1, 1),
              f"{encoder}blocks.1.0.se.conv_reduce.weight": (6, 144, 1, 1),  # a quarter of the block *input*
              f"{encoder}blocks.2.0.conv_dw.weight": (240, 1, 5, 5),
              f"{encoder}blocks.4.6.bn3.running_var": (176,),
              f"{encoder}blocks.6.2.conv_pwl.weight": (512, 3072, 1, 1),
              f"{encoder}conv_head.weight": (2048, 512, 1, 1),
              f"{encoder}bn2.running_var": (2048,),
              "decoder.conv2.weight": (2048, 2048, 1, 1),
              "decoder.up1._net.0.weight": (1024, 2048 + 176, 3, 3),
              "decoder.up4._net.4.running_mean": (128,),
              "decoder.out_conv_res8.weight": (4, 512, 3, 3),
              "decoder.out_conv_res4.0.weight": (128, 516, 1),
              "decoder.out_conv_res1.6.weight": (4, 128, 1)}
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    assert [len(stage) for stage in net.encoder.original_model.blocks] == [3, 5, 5, 7, 7, 9, 3]
    assert all(not k.startswith(f"{encoder}classifier") for k in state)
    assert {m.eps for m in net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
    assert not any(m.bias is not None for n, m in net.encoder.named_modules()
                   if isinstance(m, torch.nn.Conv2d) and ".se." not in f".{n}.")


def test_stride_two_convs_pad_like_tensorflow():
    from invokeai_provider.models.annotators.normal_bae import _SameConv2d

    torch.manual_seed(0)
    conv = _SameConv2d(2, 3, 5, stride=2)
    for size, (before, after) in ((8, (1, 2)), (7, (2, 2))):  # the odd pixel goes at the end
        x = torch.randn(1, 2, size, size)
        expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (before, after, before, after)),
                                              conv.weight, stride=2)
        assert conv(x).shape[-1] == -(-size // 2)
        assert torch.allclose(conv(x), expected, atol=1e-6)


def test_predictions_are_unit_normals_with_positive_kappa():
    from invokeai_provider.models.annotators.normal_bae import normalize_prediction

    out = normalize_prediction(torch.tensor([[[[3.0]], [[0.0]], [[4.0]], [[-50.0]]]]))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.6, 0.0, 0.8, 0.01]), atol=1e-6)


def test_scannet_checkpoint_is_unwrapped():
    from invokeai_provider.models.annotators.normal_bae import unwrap_checkpoint

    tensor = torch.zeros(1)
    assert unwrap_checkpoint({"model": {"module.encoder.x": tensor}, "epoch": 3}) == {"encoder.x": tensor}
    assert unwrap_checkpoint({"decoder.y": tensor}) == {"decoder.y": tensor}


# --- the node -------------------------------------------------------------------------------------------


def test_normal_map_is_rgb_image_sized_unit_normals(models_run, checkpoints):
    _install(models_run, checkpoints / "scannet.pt")
    out, normals = _normal_map(models_run)
    assert normals.mode == "RGB" and normals.size == (64, 64) == (out.width, out.height)
    lengths = np.linalg.norm(_decoded(normals), axis=2)
    # 8-bit truncation moves each component by less than 2/255
    assert 0.98 < lengths.min() and lengths.max() < 1.02
    assert len(np.unique(np.asarray(normals).reshape(-1, 3), axis=0)) > 50  # a map, not one colour
    _, again = _normal_map(models_run)
    assert np.array_equal(np.asarray(normals), np.asarray(again))
    _, other = _normal_map(models_run, _photo(seed=1))
    assert not np.array_equal(np.asarray(normals), np.asarray(other))


def test_odd_sized_image_comes_back_at_its_size(models_run, checkpoints):
    _install(models_run, checkpoints / "scannet.pt")
    out, normals = _normal_map(models_run, _photo(70, 45))
    assert normals.mode == "RGB" and normals.size == (70, 45) == (out.width, out.height)
    assert np.linalg.norm(_decoded(normals), axis=2).mean() > 0.9


def test_safetensors_twin_loads_the_same_weights(models_run, checkpoints):
    pt = _install(models_run, checkpoints / "scannet.pt")
    _, reference = _normal_map(models_run)
    pt.unlink()
    _install(models_run, checkpoints / "scannet.safetensors", name="scannet.safetensors")
    _, twin = _normal_map(models_run)
    assert np.array_equal(np.asarray(reference), np.asarray(twin))


def test_missing_checkpoint_names_node_field_and_file(models_run):
    with pytest.raises(NodeExecutionError, match=r"node n \(normal_map\): field image: no model at "
                                                 r".*core/lllyasviel/Annotators \(missing scannet\.pt\)"):
        _normal_map(models_run)


def test_wrong_checkpoint_names_node_field_and_file(models_run):
    _install(models_run, {"model": {"module.encoder.conv_stem.weight": torch.zeros(48, 3, 3, 3)}})
    with pytest.raises(NodeExecutionError, match=r"node n \(normal_map\): field image: .*scannet\.pt does not fit "
                                                 r"the NormalBaeNet network: missing keys 936 .*unexpected keys 1 "
                                                 r"\(e\.g\. encoder\.conv_stem\.weight\)"):
        _normal_map(models_run)


def test_too_small_image_is_a_clear_error(models_run):
    _install(models_run, {"model": {}})  # never read: the size is checked first
    with pytest.raises(NodeExecutionError, match=r"node n \(normal_map\): field image: the image is 6x40: "
                                                 r"NormalBae needs at least 8 px"):
        _normal_map(models_run, _photo(6, 40))
