"""Lineart and anime lineart nodes: declarations match InvokeAI 6.11, the networks have the published
checkpoints' names and shapes, and the nodes run seeded random-weight checkpoints from
``<model root>/core/lllyasviel/Annotators`` to image-sized white-on-black maps."""

from __future__ import annotations

import functools
import math

import pytest

from helpers import only_output, put_image, stored_image

from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.models.annotators.checkpoint import ANNOTATORS_DIR
from invokeai_provider.core.registry import InvocationRegistry

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")
torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from invokeai_provider.models.annotators import lineart as lineart_net, lineart_anime as lineart_anime_net  # noqa: E402
from invokeai_provider.operators.controlnet import lineart as lineart_nodes  # noqa: E402

FINE, COARSE, ANIME = lineart_nodes.LINEART_FINE_FILE, lineart_nodes.LINEART_COARSE_FILE, lineart_nodes.LINEART_ANIME_FILE




def _photo(width=64, height=48, seed=0):
    rng = np.random.RandomState(seed)
    pixels = (rng.rand(height, width, 3) * 255).astype("uint8")
    pixels[8:30, 10:40] = (230, 230, 230)  # a bright block on noise: some structure to react to
    return Image.fromarray(pixels)


@pytest.fixture
def models_run(tmp_path, run):
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    run.services["models"] = ModelManager(ModelRegistry(str(tmp_path / "models")), device="cpu")
    return run


def _folder(models_run):
    folder = models_run.services["models"].registry.root / ANNOTATORS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _generator(seed, head_bias=None):
    """A seeded full-size lineart generator; with ``head_bias`` its output is the constant sigmoid(bias)."""
    torch.manual_seed(seed)
    model = lineart_net.LineartGenerator()
    if head_bias is not None:
        with torch.no_grad():
            model.model4[1].weight.zero_()
            model.model4[1].bias.fill_(head_bias)
    return model.state_dict()


TINY_BASE = 4  # the anime U-Net's width in tests (published: 64); its depth stays the published 8 levels


def _unet(seed, head_bias=None, base=TINY_BASE):
    """A seeded anime U-Net; with ``head_bias`` its output is the constant tanh(bias)."""
    torch.manual_seed(seed)
    model = lineart_anime_net.LineartAnimeUNet(base=base)
    if head_bias is not None:
        with torch.no_grad():
            model.model.model[3].weight.zero_()
            model.model.model[3].bias.fill_(head_bias)
    return model.state_dict()


@pytest.fixture
def tiny_anime(monkeypatch):
    """The node builds the tiny-width U-Net, so tiny checkpoints load."""
    monkeypatch.setattr(lineart_anime_net, "LineartAnimeUNet",
                        functools.partial(lineart_anime_net.LineartAnimeUNet, base=TINY_BASE))


def _lineart(models_run, image=None, **fields):
    out = only_output(models_run, {"type": "lineart_edge_detection", "image": put_image(models_run, "in.png", image or _photo()),
                                   **fields})
    return out, stored_image(models_run, out)


def _anime(models_run, image=None):
    out = only_output(models_run, {"type": "lineart_anime_edge_detection", "image": put_image(models_run, "in.png", image or _photo())})
    return out, stored_image(models_run, out)


def _logit(p):
    return math.log(p / (1.0 - p))


# --- declarations -------------------------------------------------------------------------------------

DECLARED = {
    "lineart_edge_detection": ("Lineart Edge Detection", ["board", "metadata", "image", "coarse"]),
    "lineart_anime_edge_detection": ("Lineart Anime Edge Detection", ["board", "metadata", "image"]),
}


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_declaration_matches_invokeai(node_type):
    title, inputs = DECLARED[node_type]
    cls = InvocationRegistry.get_invocation_class(node_type)
    ui = cls.UIConfig
    assert (ui.title, ui.version, ui.category, ui.tags) == (title, "1.0.0", "controlnet", ["controlnet", "lineart"])
    assert ui.gpu
    assert cls.get_output_annotation().get_type() == "image_output"
    assert list(cls.input_fields()) == inputs
    if node_type == "lineart_edge_detection":
        assert cls.input_fields()["coarse"].default is False



def test_networks_have_the_published_names_and_shapes():
    fine = {k: tuple(v.shape) for k, v in lineart_net.LineartGenerator().state_dict().items()}
    assert len(fine) == 24 and sum(math.prod(s) for s in fine.values()) == 4_290_945
    assert fine["model0.1.weight"] == (64, 3, 7, 7)
    assert fine["model2.2.conv_block.5.weight"] == (256, 256, 3, 3)
    assert fine["model3.0.weight"] == (256, 128, 3, 3)  # transposed: (in, out, k, k)
    assert fine["model4.1.weight"] == (1, 64, 7, 7)
    anime = {k: tuple(v.shape) for k, v in lineart_anime_net.LineartAnimeUNet().state_dict().items()}
    assert len(anime) == 32 and sum(math.prod(s) for s in anime.values()) == 54_405_505
    assert anime["model.model.0.weight"] == (64, 3, 4, 4)
    assert anime["model.model.3.weight"] == (128, 1, 4, 4)
    innermost = "model.model" + ".1.model.3.model.3.model.3.model.3.model.3.model.3.model"
    assert anime[innermost + ".1.weight"] == (512, 512, 4, 4) and anime[innermost + ".3.weight"] == (512, 512, 4, 4)


# --- lineart ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 48), (50, 37)])
def test_lineart_is_greyscale_image_sized_and_deterministic(models_run, size):
    torch.save(_generator(0), _folder(models_run) / FINE)
    image = _photo(*size)
    out, edges = _lineart(models_run, image)
    assert (out.width, out.height) == size and edges.size == size and edges.mode == "L"
    values = np.asarray(edges)
    assert values.std() > 0
    assert not ((values > 0) & (values < lineart_nodes.NOISE_FLOOR)).any()  # the noise floor is cleared
    _, again = _lineart(models_run, image)
    assert np.array_equal(values, np.asarray(again))


def test_lineart_coarse_reads_the_coarse_checkpoint(models_run):
    folder = _folder(models_run)
    torch.save(_generator(0, head_bias=20.0), folder / FINE)  # all background: a black map
    torch.save(_generator(1, head_bias=-20.0), folder / COARSE)  # all line: a white map
    _, fine = _lineart(models_run)
    _, coarse = _lineart(models_run, coarse=True)
    assert (np.asarray(fine) == 0).all() and (np.asarray(coarse) == 255).all()
    # both stay in the cache, each under its own key
    cache = models_run.services["models"].cache
    misses = cache.stats.misses
    _lineart(models_run)
    _lineart(models_run, coarse=True)
    assert cache.stats.misses == misses
    assert len([k for k in cache.keys() if "Annotators" in k]) == 2


def test_lineart_random_fine_and_coarse_differ(models_run):
    folder = _folder(models_run)
    torch.save(_generator(0), folder / FINE)
    torch.save(_generator(1), folder / COARSE)
    assert not np.array_equal(np.asarray(_lineart(models_run)[1]), np.asarray(_lineart(models_run, coarse=True)[1]))


@pytest.mark.parametrize("line, expected", [(247.5, 0), (235.5, 20), (0.5, 255)])
def test_lineart_inverts_and_clears_faint_noise(models_run, line, expected):
    # a constant network output of `line` (0..255, 255 = background) becomes 255 - floor(line), zeroed below 12
    torch.save(_generator(0, head_bias=_logit(line / 255.0)), _folder(models_run) / FINE)
    assert (np.asarray(_lineart(models_run)[1]) == expected).all()


def test_lineart_prefers_a_safetensors_sibling(models_run):
    from safetensors.torch import save_file

    folder = _folder(models_run)
    torch.save(_generator(0, head_bias=20.0), folder / FINE)
    save_file(_generator(0, head_bias=-20.0), str(folder / "sk_model.safetensors"))
    assert (np.asarray(_lineart(models_run)[1]) == 255).all()
    (folder / FINE).unlink()  # the safetensors file alone is enough
    assert (np.asarray(_lineart(models_run)[1]) == 255).all()


def test_lineart_missing_checkpoint_names_node_field_and_file(models_run):
    torch.save(_generator(0), _folder(models_run) / FINE)
    with pytest.raises(NodeExecutionError, match=r"node n \(lineart_edge_detection\): field coarse: no model at "
                                                 r".*core/lllyasviel/Annotators \(missing sk_model2\.pth\)"):
        _lineart(models_run, coarse=True)


def test_lineart_without_model_service_is_a_clear_error(run):
    run.services.pop("models", None)
    with pytest.raises(NodeExecutionError, match=r"field coarse: no model service"):
        _lineart(run)


def test_lineart_wrong_keys_name_node_field_and_file(models_run):
    torch.save({"conv.weight": torch.zeros(1)}, _folder(models_run) / FINE)
    with pytest.raises(NodeExecutionError, match=r"node n \(lineart_edge_detection\): field coarse: .*sk_model\.pth does not "
                                                 r"fit the LineartGenerator network: missing keys 24 "
                                                 r"\(e\.g\. model0\.1\.bias.*unexpected keys 1 \(e\.g\. conv\.weight\)"):
        _lineart(models_run)


def test_lineart_wrong_shapes_are_named(models_run):
    torch.save(lineart_net.LineartGenerator(base=8).state_dict(), _folder(models_run) / COARSE)
    with pytest.raises(NodeExecutionError, match=r"field coarse: .*sk_model2\.pth does not fit the LineartGenerator "
                                                 r"network: keys of another shape 23"):
        _lineart(models_run, coarse=True)


def test_lineart_refuses_pickled_objects(models_run):
    torch.save({"model": torch.nn.Linear(2, 2)}, _folder(models_run) / FINE)
    with pytest.raises(NodeExecutionError, match=r"field coarse: cannot read .*sk_model\.pth as a checkpoint of "
                                                 r"tensors: UnpicklingError"):
        _lineart(models_run)


# --- lineart anime ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 48), (70, 45)])
def test_anime_is_greyscale_image_sized_and_deterministic(models_run, tiny_anime, size):
    torch.save(_unet(0), _folder(models_run) / ANIME)
    image = _photo(*size)
    out, edges = _anime(models_run, image)
    assert (out.width, out.height) == size and edges.size == size and edges.mode == "L"
    values = np.asarray(edges)
    assert values.std() > 0
    assert not ((values > 0) & (values < lineart_nodes.NOISE_FLOOR)).any()
    assert np.array_equal(values, np.asarray(_anime(models_run, image)[1]))
    assert not np.array_equal(values, np.asarray(_anime(models_run, _photo(*size, seed=1))[1]))


@pytest.mark.parametrize("bias, expected", [(-10.0, 255), (10.0, 0)])
def test_anime_maps_lines_to_white(models_run, tiny_anime, bias, expected):
    # tanh(-10) = -1 is "line" everywhere (white), +1 is background (black)
    torch.save(_unet(0, head_bias=bias), _folder(models_run) / ANIME)
    assert (np.asarray(_anime(models_run)[1]) == expected).all()


def test_anime_accepts_data_parallel_names(models_run, tiny_anime):
    state = _unet(0)
    torch.save({f"module.{k}": v for k, v in state.items()}, _folder(models_run) / "plain.pth")
    torch.save(state, _folder(models_run) / ANIME)
    plain = np.asarray(_anime(models_run)[1])
    (_folder(models_run) / "plain.pth").replace(_folder(models_run) / ANIME)
    models_run.services["models"].cache.clear()
    assert np.array_equal(plain, np.asarray(_anime(models_run)[1]))


def test_anime_wrong_keys_name_node_field_and_file(models_run, tiny_anime):
    torch.save(_generator(0), _folder(models_run) / ANIME)  # a lineart checkpoint in the anime file
    with pytest.raises(NodeExecutionError, match=r"node n \(lineart_anime_edge_detection\): field image: .*netG\.pth does "
                                                 r"not fit the LineartAnimeUNet network: missing keys 32"):
        _anime(models_run)


def test_anime_missing_checkpoint_names_node_field_and_file(models_run):
    with pytest.raises(NodeExecutionError, match=r"node n \(lineart_anime_edge_detection\): field image: no model at "
                                                 r".*core/lllyasviel/Annotators \(missing netG\.pth\)"):
        _anime(models_run)


def test_anime_published_width_runs_from_safetensors(models_run):
    """The node's own (published, 64-wide) U-Net with a full-size random checkpoint in safetensors form."""
    from safetensors.torch import save_file

    save_file(_unet(0, base=64), str(_folder(models_run) / "netG.safetensors"))
    out, edges = _anime(models_run, _photo(40, 30))
    assert (out.width, out.height) == (40, 30) and edges.mode == "L"
