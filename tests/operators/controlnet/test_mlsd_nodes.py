"""mlsd_detection: the declaration matches InvokeAI 6.11; the M-LSD network has the published checkpoint's
layout; random-weight checkpoints under ``<model root>/core/lllyasviel/Annotators`` give line maps of the
input's size whose lines react to the thresholds as InvokeAI's do."""

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
CKPT = "mlsd_large_512_fp32.pth"


def _photo(width=128, height=64, seed=0):
    rng = np.random.RandomState(seed)
    return (rng.rand(height, width, 3) * 255).astype("uint8")



def _state_dict(seed=0):
    """A seeded random M-LSD whose last conv is scaled so that scores and segment lengths spread out enough
    for the default thresholds to keep some lines and drop others."""
    from invokeai_provider.models.annotators.mlsd import MobileV2MLSDLarge

    torch.manual_seed(seed)
    net = MobileV2MLSDLarge().eval()
    with torch.no_grad():
        head = net.block23.conv3.weight
        head[7] *= 100  # the centre heat map (output channel 0)
        head[8:12] *= 600  # the end-point displacements (output channels 1-4)
    return net.state_dict()


@pytest.fixture
def models_run(tmp_path, run):
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    run.services["models"] = ModelManager(ModelRegistry(str(tmp_path / "models")), device="cpu")
    return run


def _root(models_run):
    return models_run.services["models"].registry.root


def _install(models_run, state=None, folder=ANNOTATORS, name=CKPT):
    path = _root(models_run) / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    state = _state_dict() if state is None else state
    if name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def _mlsd(models_run, image=None, **fields):
    image = _photo() if image is None else image
    out = only_output(models_run, {"type": "mlsd_detection", "image": put_image(models_run, "in.png", image),
                                   **fields})
    return out, stored_image(models_run, out)


# --- declaration ----------------------------------------------------------------------------------------


def test_declaration_matches_invokeai():
    cls = InvocationRegistry.get_invocation_class("mlsd_detection")
    ui = cls.UIConfig
    assert (ui.title, ui.version, ui.category, ui.tags) == ("MLSD Detection", "1.0.0", "controlnet",
                                                            ["controlnet", "mlsd", "edge"])
    assert ui.gpu
    assert cls.get_output_annotation().get_type() == "image_output"
    assert list(cls.input_fields()) == ["board", "metadata", "image", "score_threshold", "distance_threshold"]
    assert cls.input_fields()["score_threshold"].default == 0.1
    assert cls.input_fields()["distance_threshold"].default == 20.0



# --- network and decoding -------------------------------------------------------------------------------


def test_network_has_the_published_checkpoint_layout():
    from invokeai_provider.models.annotators.mlsd import MobileV2MLSDLarge

    state = MobileV2MLSDLarge().state_dict()
    assert len(state) == 362
    shapes = {"backbone.features.0.0.weight": (32, 4, 3, 3),  # RGB + the constant channel
              "backbone.features.1.conv.0.0.weight": (32, 1, 3, 3),  # the t=1 block has no expansion conv
              "backbone.features.1.conv.1.weight": (16, 32, 1, 1),
              "backbone.features.13.conv.2.weight": (96, 576, 1, 1),
              "backbone.features.13.conv.3.running_var": (96,),
              "block15.conv1.0.weight": (64, 96, 1, 1), "block15.conv2.0.weight": (64, 64, 1, 1),
              "block22.conv2.1.num_batches_tracked": (),
              "block23.conv1.0.weight": (64, 64, 3, 3), "block23.conv3.weight": (16, 64, 1, 1),
              "block23.conv3.bias": (16,)}
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    assert not any(k.startswith("backbone.features.14") for k in state)


def test_tp_map_is_nine_maps_at_half_resolution():
    from invokeai_provider.models.annotators.mlsd import MobileV2MLSDLarge, network_input

    net = MobileV2MLSDLarge().eval()
    batch = network_input(_photo(128, 64))
    assert tuple(batch.shape) == (1, 4, 64, 128)
    # the constant channel is scaled like the colours: 1 -> 1/127.5 - 1
    assert torch.allclose(batch[0, 3], torch.full((64, 128), 1 / 127.5 - 1))
    assert float(batch[0, :3].min()) >= -1 and float(batch[0, :3].max()) <= 1
    with torch.no_grad():
        assert tuple(net(batch).shape) == (1, 9, 32, 64)


def _tp_map(peaks, height=16, width=16):
    """A TP map with a heat logit and displacements (dx0, dy0, dx1, dy1) at each (y, x) of ``peaks``."""
    tp = torch.full((1, 9, height, width), 0.0)
    tp[0, 0] = -20.0  # sigmoid ~ 0 elsewhere
    for (y, x), (logit, shifts) in peaks.items():
        tp[0, 0, y, x] = logit
        tp[0, 1:5, y, x] = torch.tensor(shifts, dtype=torch.float32)
    return tp


def test_decoding_finds_segments_at_heat_peaks_in_input_pixels():
    from invokeai_provider.models.annotators.mlsd import decode_segments

    tp = _tp_map({(10, 5): (3.0, (-3.0, 0.0, 3.0, 0.0)),  # score 0.95, length 6, horizontal
                  (2, 12): (0.0, (0.0, -1.0, 0.0, 1.0))})  # score 0.5, length 2, vertical
    both = decode_segments(tp, 0.1, 1.0)
    assert sorted(map(tuple, both.tolist())) == [(4.0, 20.0, 16.0, 20.0), (24.0, 2.0, 24.0, 6.0)]
    assert decode_segments(tp, 0.6, 1.0).tolist() == [[4.0, 20.0, 16.0, 20.0]]  # the weak one dropped
    assert decode_segments(tp, 0.1, 2.0).tolist() == [[4.0, 20.0, 16.0, 20.0]]  # length 2 is not > 2
    assert decode_segments(tp, 0.99, 0.0).shape == (0, 4)


def test_decoding_keeps_only_local_maxima():
    from invokeai_provider.models.annotators.mlsd import decode_segments

    # two neighbouring strong pixels: only the stronger one is a centre (3x3 peak window)
    tp = _tp_map({(8, 8): (4.0, (-4.0, 0.0, 4.0, 0.0)), (8, 9): (3.0, (0.0, -4.0, 0.0, 4.0))})
    assert decode_segments(tp, 0.1, 0.0).tolist() == [[8.0, 16.0, 24.0, 16.0]]


def test_draw_segments_is_white_on_black():
    from invokeai_provider.models.annotators.mlsd import draw_segments

    canvas = draw_segments(np.array([[4.0, 20.0, 16.9, 20.0]]), 32, 32)
    assert canvas.dtype == np.uint8 and set(np.unique(canvas)) == {0, 255}
    assert np.argwhere(canvas).tolist() == [[20, x] for x in range(4, 17)]
    assert draw_segments(np.zeros((0, 4)), 8, 8).max() == 0


# --- the node -------------------------------------------------------------------------------------------


def test_line_map_is_greyscale_white_on_black_and_image_sized(models_run):
    _install(models_run)
    out, lines = _mlsd(models_run)
    assert lines.mode == "L" and lines.size == (128, 64) == (out.width, out.height)
    values = np.asarray(lines)
    assert set(np.unique(values)) == {0, 255}  # 128x64 is a multiple of 64: no resampling, crisp lines
    assert 0 < (values == 255).mean() < 0.5
    _, again = _mlsd(models_run)
    assert np.array_equal(values, np.asarray(again))


def test_thresholds_drop_lines(models_run):
    _install(models_run)
    base = np.asarray(_mlsd(models_run)[1]) > 0  # the defaults: 0.1 and 20
    strict_score = np.asarray(_mlsd(models_run, score_threshold=0.58)[1]) > 0
    long_only = np.asarray(_mlsd(models_run, distance_threshold=23.0)[1]) > 0
    none = np.asarray(_mlsd(models_run, score_threshold=1.0)[1])
    for fewer in (strict_score, long_only):
        assert 0 < fewer.sum() < base.sum()
        assert not (fewer & ~base).any()  # a subset of the lines: the same segments, fewer of them
    assert none.max() == 0  # no sigmoid score exceeds 1


def test_odd_sized_image_comes_back_at_its_size(models_run):
    _install(models_run)
    out, lines = _mlsd(models_run, image=_photo(150, 90), distance_threshold=0.0)
    assert lines.mode == "L" and lines.size == (150, 90) == (out.width, out.height)
    assert np.asarray(lines).max() > 0


def test_safetensors_twin_and_invokeai_download_folder_load_the_same_weights(models_run):
    pth = _install(models_run)
    _, reference = _mlsd(models_run)
    pth.unlink()
    _install(models_run, name="mlsd_large_512_fp32.safetensors")
    _, from_safetensors = _mlsd(models_run)
    assert np.array_equal(np.asarray(reference), np.asarray(from_safetensors))

    (_root(models_run) / ANNOTATORS / "mlsd_large_512_fp32.safetensors").unlink()
    _install(models_run, folder="core/lllyasviel/ControlNet/annotator/ckpts")
    _, from_invokeai_folder = _mlsd(models_run)
    assert np.array_equal(np.asarray(reference), np.asarray(from_invokeai_folder))


def test_missing_checkpoint_names_node_field_and_file(models_run):
    with pytest.raises(NodeExecutionError, match=r"node n \(mlsd_detection\): field image: no model at "
                                                 r".*core/lllyasviel/Annotators \(missing mlsd_large_512_fp32\.pth\)"):
        _mlsd(models_run)


def test_wrong_checkpoint_names_node_field_and_file(models_run):
    state = _state_dict()
    state["block24.conv.weight"] = state.pop("block23.conv3.weight")
    _install(models_run, state)
    with pytest.raises(NodeExecutionError, match=r"node n \(mlsd_detection\): field image: .*mlsd_large_512_fp32"
                                                 r"\.pth does not fit the MobileV2MLSDLarge network: missing keys 1 "
                                                 r"\(e\.g\. block23\.conv3\.weight\); unexpected keys 1"):
        _mlsd(models_run)


def test_checkpoint_with_other_shapes_is_refused(models_run):
    state = _state_dict()
    state["block23.conv3.weight"] = torch.zeros(8, 64, 1, 1)
    _install(models_run, state)
    with pytest.raises(NodeExecutionError, match=r"field image: .*keys of another shape 1 \(e\.g\. "
                                                 r"block23\.conv3\.weight\)"):
        _mlsd(models_run)


def test_checkpoint_with_code_is_not_unpickled(models_run):
    from fractions import Fraction

    _install(models_run, {"weights": Fraction(1, 3)})
    with pytest.raises(NodeExecutionError, match=r"node n \(mlsd_detection\): field image: cannot read "
                                                 r".*mlsd_large_512_fp32\.pth as a checkpoint of tensors"):
        _mlsd(models_run)


def test_too_small_image_is_a_clear_error(models_run):
    _install(models_run)
    with pytest.raises(NodeExecutionError, match=r"node n \(mlsd_detection\): field image: the image is 60x80: "
                                                 r"MLSD needs at least 64 px"):
        _mlsd(models_run, image=_photo(60, 80))
    with pytest.raises(NodeExecutionError, match=r"the image is 200x66"):  # 192 wide -> 63 high -> 0
        _mlsd(models_run, image=_photo(200, 66))
