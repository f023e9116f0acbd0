"""HED and PiDiNet soft-edge nodes: declarations match InvokeAI 6.11; the networks have the published
checkpoints' layer names and shapes; the nodes run seeded random-weight networks from
``<model root>/core/lllyasviel/Annotators`` and, with hand-set weights that make the networks real gradient
detectors, give bright edges where the image has them and options that change the map as InvokeAI's do."""

from __future__ import annotations


import pytest

from helpers import only_output, put_image, run_nodes, stored_image

from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.core.registry import InvocationRegistry

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")
pytest.importorskip("cv2")

from invokeai_provider.models.annotators.hed import HED_CHECKPOINT, HEDNet  # noqa: E402
from invokeai_provider.models.annotators.pidi import PIDI_CHECKPOINT, PiDiNet, difference_kernel  # noqa: E402

ANNOTATORS = "core/lllyasviel/Annotators"
HEIGHT, WIDTH = 45, 67  # odd sizes: the networks pool by 2 up to four times and must still give the input size
RECT = (slice(12, 34), slice(16, 52))  # rows, cols of the bright rectangle



def _photo(seed=0):
    rng = np.random.RandomState(seed)
    pixels = (rng.rand(HEIGHT, WIDTH, 3) * 255).astype("uint8")
    pixels[RECT] = (220, 40, 40)
    return Image.fromarray(pixels)


def _rectangle():
    """A white rectangle on black: edges on its outline only (black matches the networks' zero padding)."""
    pixels = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    pixels[RECT] = 255
    return Image.fromarray(pixels)


def _soft_rectangle():
    """The rectangle blurred: edges a few pixels wide, as a real detector's are (scribble mode's thinning
    blurs first, so a one-pixel line is too faint for it)."""
    import cv2

    return Image.fromarray(cv2.GaussianBlur(np.asarray(_rectangle()), (0, 0), 1.5))


def _outline_distance():
    """Each pixel's distance (Chebyshev, px) to the rectangle's outline."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    r0, r1, c0, c1 = RECT[0].start, RECT[0].stop - 1, RECT[1].start, RECT[1].stop - 1
    inside = (rows >= r0) & (rows <= r1) & (cols >= c0) & (cols <= c1)
    to_box = np.maximum(np.maximum(r0 - rows, rows - r1), np.maximum(c0 - cols, cols - c1))
    to_edge_inside = np.minimum(np.minimum(rows - r0, r1 - rows), np.minimum(cols - c0, c1 - cols))
    return np.where(inside, to_edge_inside, to_box)


# --- declarations -------------------------------------------------------------------------------------

# type -> (title, tags, inputs in InvokeAI's order, defaults)
DECLARED = {
    "hed_edge_detection": ("HED Edge Detection", ["controlnet", "hed", "softedge"],
                           ["board", "metadata", "image", "scribble"], {"scribble": False}),
    "pidi_edge_detection": ("PiDiNet Edge Detection", ["controlnet", "edge"],
                            ["board", "metadata", "image", "quantize_edges", "scribble"],
                            {"quantize_edges": False, "scribble": False}),
}


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_declaration_matches_invokeai(node_type):
    title, tags, inputs, defaults = DECLARED[node_type]
    cls = InvocationRegistry.get_invocation_class(node_type)
    ui = cls.UIConfig
    assert (ui.title, ui.version, ui.category, ui.tags) == (title, "1.0.0", "controlnet", tags)
    assert ui.gpu
    assert cls.get_output_annotation().get_type() == "image_output"
    assert list(cls.input_fields()) == inputs
    for name, default in defaults.items():
        assert cls.input_fields()[name].default == default, name



# --- the networks ---------------------------------------------------------------------------------------


def test_hed_layers_are_those_of_the_published_checkpoint():
    shapes = {k: tuple(v.shape) for k, v in HEDNet().state_dict().items()}
    assert len(shapes) == 37 and sum(int(np.prod(s)) for s in shapes.values()) == 14_716_168
    assert shapes["norm"] == (1, 3, 1, 1)
    assert shapes["block1.convs.0.weight"] == (64, 3, 3, 3) and shapes["block1.convs.1.bias"] == (64,)
    assert shapes["block3.convs.2.weight"] == (256, 256, 3, 3)
    assert shapes["block5.convs.2.weight"] == (512, 512, 3, 3) and "block5.convs.3.weight" not in shapes
    assert shapes["block4.projection.weight"] == (1, 512, 1, 1) and shapes["block4.projection.bias"] == (1,)


def test_pidi_layers_are_those_of_the_published_checkpoint():
    shapes = {k: tuple(v.shape) for k, v in PiDiNet().state_dict().items()}
    assert len(shapes) == 83 and sum(int(np.prod(s)) for s in shapes.values()) == 710_149
    assert shapes["init_block.weight"] == (60, 3, 3, 3) and "init_block.bias" not in shapes
    assert shapes["block1_1.conv1.weight"] == (60, 1, 3, 3) and shapes["block1_3.conv2.weight"] == (60, 60, 1, 1)
    assert shapes["block2_1.shortcut.weight"] == (120, 60, 1, 1) and shapes["block2_1.shortcut.bias"] == (120,)
    assert shapes["block3_1.shortcut.weight"] == (240, 120, 1, 1)
    assert shapes["block4_1.shortcut.weight"] == (240, 240, 1, 1)
    assert "block2_2.shortcut.weight" not in shapes and shapes["block4_4.conv1.weight"] == (240, 1, 3, 3)
    assert shapes["dilations.0.conv1.weight"] == (24, 60, 1, 1)
    assert shapes["dilations.3.conv1.weight"] == (24, 240, 1, 1)
    assert shapes["dilations.2.conv2_4.weight"] == (24, 24, 3, 3) and "dilations.2.conv2_4.bias" not in shapes
    assert shapes["attentions.1.conv1.weight"] == (4, 24, 1, 1) and shapes["attentions.1.conv2.weight"] == (1, 4, 3, 3)
    assert shapes["conv_reduces.3.conv.weight"] == (1, 24, 1, 1) and shapes["classifier.weight"] == (1, 4, 1, 1)


def _taps(x, radius):
    """x [1, C, H, W] -> a function giving x shifted by (dy, dx) (zero outside), for direct sums of taps."""
    padded = torch.nn.functional.pad(x, (radius,) * 4)
    height, width = x.shape[2:]
    return lambda dy, dx: padded[:, :, radius + dy:radius + dy + height, radius + dx:radius + dx + width]


NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1)]  # flattened 3x3


@pytest.mark.parametrize("kind", ["cv", "cd", "ad", "rd"])
def test_difference_kernels_compute_the_pixel_differences(kind):
    torch.manual_seed(1)
    x, weight = torch.randn(1, 2, 9, 11), torch.randn(3, 2, 3, 3)
    kernel, padding = difference_kernel(kind, weight)
    fast = torch.nn.functional.conv2d(x, kernel, padding=padding)
    at = _taps(x, 2)
    w = weight.reshape(3, 2, 9)

    def tap(index, shifted):  # sum over input channels of weight tap ``index`` times a shifted image
        return torch.einsum("oc,nchw->nohw", w[:, :, index], shifted)

    if kind == "cv":
        direct = sum(tap(i, at(*d)) for i, d in enumerate(NEIGHBOURS))
    elif kind == "cd":  # each neighbour minus the centre
        direct = sum(tap(i, at(*d) - at(0, 0)) for i, d in enumerate(NEIGHBOURS))
    elif kind == "ad":  # each ring pixel minus its clockwise neighbour
        clockwise = {0: 1, 1: 2, 2: 5, 5: 8, 8: 7, 7: 6, 6: 3, 3: 0}
        direct = sum(tap(i, at(*NEIGHBOURS[i]) - at(*NEIGHBOURS[j])) for i, j in clockwise.items())
    else:  # the pixel two steps out minus the one a step out, along the 8 directions (weights 1..8)
        ring = [d for d in NEIGHBOURS if d != (0, 0)]
        direct = sum(tap(i + 1, at(2 * dy, 2 * dx) - at(dy, dx)) for i, (dy, dx) in enumerate(ring))
    assert fast.shape == x.shape[:1] + (3,) + x.shape[2:]
    assert torch.allclose(fast, direct, atol=1e-4)


def test_pidi_outputs_are_probabilities_of_the_input_size():
    torch.manual_seed(0)
    with torch.no_grad():
        outputs = PiDiNet().eval()(torch.rand(1, 3, HEIGHT, WIDTH))
    assert len(outputs) == 5 and all(o.shape == (1, 1, HEIGHT, WIDTH) for o in outputs)
    assert all(float(o.min()) >= 0.0 and float(o.max()) <= 1.0 for o in outputs)


# --- checkpoints ---------------------------------------------------------------------------------------


def _random_hed(seed=0):
    torch.manual_seed(seed)
    return HEDNet().eval()


def _random_pidi(seed=0):
    torch.manual_seed(seed)
    return PiDiNet().eval()


def _pidi_checkpoint(net):
    """As the published file is laid out: a training checkpoint with DataParallel's ``module.`` keys."""
    return {"epoch": 13, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}


def _write_root(root, hed=None, pidi=None):
    folder = root / ANNOTATORS
    folder.mkdir(parents=True, exist_ok=True)
    if hed is not None:
        torch.save(hed.state_dict(), folder / HED_CHECKPOINT)
    if pidi is not None:
        torch.save(_pidi_checkpoint(pidi), folder / PIDI_CHECKPOINT)
    return root


def _run_with_root(run, root):
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    run.services["models"] = ModelManager(ModelRegistry(str(root)), device="cpu")
    return run


@pytest.fixture(scope="module")
def random_root(tmp_path_factory):
    return _write_root(tmp_path_factory.mktemp("random"), _random_hed(), _random_pidi())


@pytest.fixture
def random_run(run, random_root):
    return _run_with_root(run, random_root)


def _edges(run, node_type, image, **fields):
    out = only_output(run, {"type": node_type, "image": put_image(run, "in.png", image), **fields})
    result = stored_image(run, out)
    assert (out.width, out.height) == result.size == image.size
    return result


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_random_network_gives_a_deterministic_grey_map_of_the_input_size(random_run, node_type):
    first = _edges(random_run, node_type, _photo())
    again = _edges(random_run, node_type, _photo())
    assert first.mode == "L" and first.size == (WIDTH, HEIGHT)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert len(np.unique(np.asarray(first))) > 1  # the random net reacts to the content
    other = _edges(random_run, node_type, _photo(seed=1))
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_pidi_reads_the_published_layout_and_a_bare_state_dict_alike(run, tmp_path):
    net = _random_pidi(3)
    published = _edges(_run_with_root(run, _write_root(tmp_path / "a", pidi=net)), "pidi_edge_detection", _photo())
    bare = tmp_path / "b" / ANNOTATORS
    bare.mkdir(parents=True)
    torch.save(net.state_dict(), bare / PIDI_CHECKPOINT)
    plain = _edges(_run_with_root(run, tmp_path / "b"), "pidi_edge_detection", _photo())
    assert np.array_equal(np.asarray(published), np.asarray(plain))


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_a_safetensors_twin_is_preferred(run, tmp_path, node_type):
    from safetensors.torch import save_file

    hed_like = node_type == "hed_edge_detection"
    make, filename = (_random_hed, HED_CHECKPOINT) if hed_like else (_random_pidi, PIDI_CHECKPOINT)
    root = _write_root(tmp_path, **({"hed": make(0)} if hed_like else {"pidi": make(0)}))
    from_pth = _edges(_run_with_root(run, root), node_type, _photo())
    twin = root / ANNOTATORS / filename.replace(".pth", ".safetensors")
    save_file({k: v.contiguous() for k, v in make(5).state_dict().items()}, str(twin))
    from_twin = _edges(_run_with_root(run, root), node_type, _photo())
    assert not np.array_equal(np.asarray(from_pth), np.asarray(from_twin))
    (root / ANNOTATORS / filename).unlink()  # the twin alone is enough
    assert np.array_equal(np.asarray(_edges(_run_with_root(run, root), node_type, _photo())), np.asarray(from_twin))


def test_both_networks_share_the_folder_but_not_the_cache_entry(random_run):
    image = put_image(random_run, "in.png", _photo())
    state = run_nodes(random_run, {"h": {"type": "hed_edge_detection", "image": image},
                                   "p": {"type": "pidi_edge_detection", "image": image}})
    [hed], [pidi] = state.outputs_of("h"), state.outputs_of("p")
    assert not np.array_equal(np.asarray(stored_image(random_run, hed)), np.asarray(stored_image(random_run, pidi)))
    cache = random_run.services["models"].cache
    keys = [k for k in cache.keys() if k.startswith("core:")]
    assert len(keys) == 2 and any(HED_CHECKPOINT in k for k in keys) and any(PIDI_CHECKPOINT in k for k in keys)
    misses = cache.stats.misses
    _edges(random_run, "hed_edge_detection", _photo())
    assert cache.stats.misses == misses  # the loaded network stays warm


@pytest.mark.parametrize("node_type, filename", [("hed_edge_detection", HED_CHECKPOINT),
                                                 ("pidi_edge_detection", PIDI_CHECKPOINT)])
def test_a_missing_checkpoint_names_node_field_and_file(run, tmp_path, node_type, filename):
    _run_with_root(run, tmp_path)
    with pytest.raises(NodeExecutionError, match=rf"node n \({node_type}\): field image: no model at "
                                                 rf".*core/lllyasviel/Annotators \(missing {filename}\)"):
        _edges(run, node_type, _photo())


def test_no_model_service_is_a_clear_error(run):
    with pytest.raises(NodeExecutionError, match=r"node n \(hed_edge_detection\): field image: no model service"):
        _edges(run, "hed_edge_detection", _photo())


def test_wrong_keys_name_node_field_file_and_keys(run, tmp_path):
    folder = tmp_path / ANNOTATORS
    folder.mkdir(parents=True)
    torch.save(_random_pidi().state_dict(), folder / HED_CHECKPOINT)  # PiDiNet weights under HED's name
    torch.save({"state_dict": {"module.backbone.weight": torch.zeros(1)}}, folder / PIDI_CHECKPOINT)
    _run_with_root(run, tmp_path)
    with pytest.raises(NodeExecutionError, match=r"node n \(hed_edge_detection\): field image: .*ControlNetHED\.pth "
                                                 r"does not fit the HEDNet network: missing keys 37 .*"
                                                 r"unexpected keys 83 \(e\.g\. attentions"):
        _edges(run, "hed_edge_detection", _photo())
    with pytest.raises(NodeExecutionError, match=r"node n \(pidi_edge_detection\): field image: .*table5_pidinet\.pth "
                                                 r"does not fit the PiDiNet network: .*unexpected keys 1 "
                                                 r"\(e\.g\. backbone\.weight\)"):
        _edges(run, "pidi_edge_detection", _photo())


def test_wrong_shapes_and_unreadable_files_are_clear_errors(run, tmp_path):
    folder = tmp_path / ANNOTATORS
    folder.mkdir(parents=True)
    state = _random_hed().state_dict()
    state["norm"] = torch.zeros(1, 4, 1, 1)
    torch.save(state, folder / HED_CHECKPOINT)
    (folder / PIDI_CHECKPOINT).write_bytes(b"not a checkpoint")
    _run_with_root(run, tmp_path)
    with pytest.raises(NodeExecutionError, match=r"field image: .*ControlNetHED\.pth does not fit the HEDNet "
                                                 r"network: keys of another shape 1 \(e\.g\. norm\)"):
        _edges(run, "hed_edge_detection", _photo())
    with pytest.raises(NodeExecutionError, match=r"field image: cannot read .*table5_pidinet\.pth as a "
                                                                     r"checkpoint"):
        _edges(run, "pidi_edge_detection", _photo())
    torch.save({"state_dict": torch.zeros(3)}, folder / PIDI_CHECKPOINT)
    _run_with_root(run, tmp_path)  # a fresh cache
    with pytest.raises(NodeExecutionError, match=r"field image: .*table5_pidinet\.pth holds a Tensor, not a "
                                                 r"state dict"):
        _edges(run, "pidi_edge_detection", _photo())


# --- hand-set gradient detectors: results in the expected direction --------------------------------------

# Forward differences right and down, each sign: their ReLUs add up to |dx| + |dy| of the summed channels.
_DIFFERENCES = [(5, 1.0), (5, -1.0), (7, 1.0), (7, -1.0)]  # (flattened 3x3 tap, sign)


def _gradient_hed(gain=0.4, offset=6.0):
    """HED whose only non-zero side output is ``gain * (|dx| + |dy|) - offset`` (the other four are 0)."""
    net = _random_hed()
    with torch.no_grad():
        for name, value in net.named_parameters():
            if "projection" in name or name == "norm" or name.startswith("block1."):
                value.zero_()
        first = net.block1.convs[0].weight.view(64, 3, 9)
        for channel, (tap, sign) in enumerate(_DIFFERENCES):
            first[channel, :, tap], first[channel, :, 4] = sign, -sign
        net.block1.convs[1].weight[0, :4, 1, 1] = 1.0
        net.block1.projection.weight[0, 0] = gain * 5  # the five side outputs are averaged
        net.block1.projection.bias[0] = -offset * 5
    return net


def _gradient_pidi(gain=100.0, offset=6.0):
    """PiDiNet whose fused logit is ``gain * (|dx| + |dy|) - offset`` (pixels in 0..1): a central-difference
    first layer, the first stage's blocks as identities and its dilation/attention/reduction passing the sum through."""
    net = _random_pidi()
    with torch.no_grad():
        net.init_block.weight.zero_()
        for channel, (tap, sign) in enumerate(_DIFFERENCES):  # "cd": the tap minus the centre
            net.init_block.weight.view(60, 3, 9)[channel, :, tap] = sign
        for block in (net.block1_1, net.block1_2, net.block1_3):
            block.conv2.weight.zero_()
        cdcm = net.dilations[0]
        cdcm.conv1.weight.zero_(), cdcm.conv1.bias.zero_()
        cdcm.conv1.weight[0, :4] = 1.0
        for index in range(1, 5):  # four centre taps: 4x the sum
            conv = getattr(cdcm, f"conv2_{index}").weight
            conv.zero_()
            conv[0, 0, 1, 1] = 1.0
        net.attentions[0].conv2.weight.zero_()  # attention 0.5 everywhere
        net.conv_reduces[0].conv.weight.zero_(), net.conv_reduces[0].conv.bias.zero_()
        net.conv_reduces[0].conv.weight[0, 0] = 1.0
        net.classifier.weight.zero_()
        net.classifier.weight[0, 0] = gain / 2.0
        net.classifier.bias[0] = -offset
    return net


@pytest.fixture(scope="module")
def gradient_root(tmp_path_factory):
    return _write_root(tmp_path_factory.mktemp("gradient"), _gradient_hed(), _gradient_pidi())


@pytest.fixture
def gradient_run(run, gradient_root):
    return _run_with_root(run, gradient_root)


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_edges_are_bright_on_the_outline_and_dark_elsewhere(gradient_run, node_type):
    edges = np.asarray(_edges(gradient_run, node_type, _rectangle()))
    # forward differences (zero beyond the border) light the pixels whose right or lower neighbour differs
    grey = np.asarray(_rectangle())[:, :, 0].astype(int)
    right, below = np.pad(grey, ((0, 0), (0, 1)))[:, 1:], np.pad(grey, ((0, 1), (0, 0)))[1:, :]
    step = (right != grey) | (below != grey)
    assert step.sum() > 100
    assert edges[step].min() >= 250 and edges[~step].max() <= 5


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_scribble_is_a_bold_binary_outline(gradient_run, node_type):
    soft = np.asarray(_edges(gradient_run, node_type, _soft_rectangle()))
    sketch = np.asarray(_edges(gradient_run, node_type, _soft_rectangle(), scribble=True))
    distance = _outline_distance()
    assert len(np.unique(soft)) > 10 and set(np.unique(sketch)) == {0, 255}
    assert (sketch[distance <= 2] == 255).all()  # the soft outline becomes a bold white line
    assert (sketch == 255).sum() > (soft >= 128).sum()
    assert (sketch[distance >= 10] == 0).all()  # far from any edge stays black
    if node_type == "pidi_edge_detection":  # quantised first, then sketched: still a binary outline
        both = np.asarray(_edges(gradient_run, node_type, _soft_rectangle(), quantize_edges=True, scribble=True))
        assert set(np.unique(both)) == {0, 255} and (both[distance <= 2] == 255).all()


def test_pidi_quantize_edges_snaps_the_map_to_three_levels(run, tmp_path):
    # a gentle gain: the noise photo's gradients then give every edge strength, not just 0 and 255
    run = _run_with_root(run, _write_root(tmp_path, pidi=_gradient_pidi(gain=2.0, offset=4.0)))
    soft = np.asarray(_edges(run, "pidi_edge_detection", _photo()))
    assert len(np.unique(soft)) > 100
    snapped = np.asarray(_edges(run, "pidi_edge_detection", _photo(), quantize_edges=True))
    assert set(np.unique(snapped)) == {0, 127, 255}
    # the soft map is 255 * p truncated; the levels are p < 1/3, p < 2/3 and above
    assert (snapped[soft <= 84] == 0).all()
    assert (snapped[(soft >= 86) & (soft <= 169)] == 127).all()
    assert (snapped[soft >= 171] == 255).all()
