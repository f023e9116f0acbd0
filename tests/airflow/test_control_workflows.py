"""ControlNet / IP-Adapter / MultiDiffusion / face-tool workflows, saved in InvokeAI's workflow format
(tests/airflow/workflows/, and the SDXL upscale example of dags/workflows/), run in the engine and through
`invokeai-airflow run` (Airflow on SQLite) with the same image: canny + depth ControlNets, ESRGAN then a canny
ControlNet image to image, a face detailer, a tiled upscale, an SDXL MultiDiffusion upscale, and a workflow saved
by InvokeAI 4.x whose canny_image_processor feeds a ControlNet.

Models are the tiny ones `models install-tiny` builds (under their default names, which the workflows use); the
helper models a node loads from ``<model root>/core`` are tiny random-weight stand-ins written there: a Depth
Anything folder, a Real-ESRGAN x2 checkpoint and mediapipe's face_landmarker.task, whose two TFLite models report
one face at a fixed place (tests/operators/controlnet/test_mediapipe_face_nodes.py builds them), so the face
detailer runs mediapipe's real landmarker, in the engine and in the Airflow subprocess alike."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

from helpers import REPO_ROOT, task_states, uri_path

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]

WORKFLOWS = Path(__file__).with_name("workflows")
EXAMPLES = REPO_ROOT / "dags" / "workflows"
SMALL = {"sdxl-multidiffusion-upscale.json": {("denoise", "tile_width"): 64, ("denoise", "tile_height"): 64,
                                              ("denoise", "tile_overlap"): 16, ("denoise", "steps"): 3}}
ESRGAN = "RealESRGAN_x2plus.pth"
FACE = (5, 6, 0.2, 0.9)  # the stand-in detector's face: anchor column and row, box (fraction of the image), score


# --- the model root --------------------------------------------------------------------------------------------


def tiny_face_models() -> Any:
    """tests/operators/controlnet/test_mediapipe_face_nodes.py, which builds tiny face landmarker bundles."""
    pytest.importorskip("mediapipe")
    pytest.importorskip("flatbuffers")
    name = "test_mediapipe_face_nodes"
    if name not in sys.modules:
        path = REPO_ROOT / "tests" / "operators" / "controlnet" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def write_core_models(root: Path) -> None:
    """The tiny stand-ins of the core models the workflows' preprocessors, upscaler and face tool load."""
    import torch
    import transformers

    from invokeai_provider.models.annotators.mediapipe_face import TASK_FILE
    from invokeai_provider.models.upscalers.rrdb import build_esrgan
    from invokeai_provider.operators.controlnet.detection import DEPTH_ANYTHING_MODELS, core_folder
    from invokeai_provider.operators.upscale.esrgan import ESRGAN_DIR

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    backbone = transformers.Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=32, image_size=28, patch_size=14,
                                         out_features=["stage1", "stage2"], reshape_hidden_states=False)
    config = transformers.DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16,
                                              neck_hidden_sizes=[8, 16], fusion_hidden_size=16, head_hidden_size=8,
                                              patch_size=14, use_pretrained_backbone=False)
    depth = root / core_folder(DEPTH_ANYTHING_MODELS["small_v2"])
    transformers.DepthAnythingForDepthEstimation(config).eval().save_pretrained(depth)
    transformers.DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                   do_pad=False).save_pretrained(depth)

    net = build_esrgan(ESRGAN)
    with torch.no_grad():
        net.conv_last.bias.fill_(0.5)  # mid-range output rather than clamped black
    (root / ESRGAN_DIR).mkdir(parents=True)
    torch.save({"params_ema": net.state_dict()}, root / ESRGAN_DIR / ESRGAN)

    faces = tiny_face_models()
    (root / "core" / "mediapipe").mkdir(parents=True)
    (root / "core" / "mediapipe" / TASK_FILE).write_bytes(
        faces.task_bundle(faces.detector(FACE), faces.landmark_model(faces.template())))


@pytest.fixture(scope="module")
def control_root(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A model root as `models install-tiny` leaves it (SD1.5 and SDXL mains, their ControlNets, the SD1.5
    IP-Adapter and its image encoder) plus the core stand-ins; the registry is returned."""
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_install import install_tiny

    root = tmp_path_factory.mktemp("control-workflow-root")
    registry = ModelRegistry(root.as_uri())
    for kind, base in (("main", "sd-1"), ("main", "sdxl"), ("controlnet", "sd-1"), ("controlnet", "sdxl"),
                       ("ip_adapter", "sd-1"), ("clip_vision", "sd-1")):
        install_tiny(registry, kind, base)
    write_core_models(root)
    return registry


@pytest.fixture(scope="module")
def manager(control_root: Any) -> Any:
    """One model manager for the module's engine runs: its cache keeps the tiny models loaded between them."""
    from invokeai_provider.models.model_manager.manager import ModelManager

    return ModelManager(control_root, device="cpu")


@pytest.fixture(scope="module")
def uploads(artifact_root: Path) -> dict[str, Any]:
    """Images uploaded to the default tenant's library: a blocky picture at 64 (control image), 32 (ESRGAN) and
    48 px (tiled upscales), and a 512 px portrait for the face detailer. Their names, and under "pixels" the
    images uploaded."""
    from invokeai_provider.storage.base import backend_for_uri
    from invokeai_provider.storage.library.images import ImageLibrary

    library = ImageLibrary(backend_for_uri(artifact_root.as_uri()), "default")
    rng = np.random.default_rng(17)

    pixels: dict[str, np.ndarray] = {}

    def upload(array: np.ndarray) -> str:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        name = library.upload(buffer.getvalue())["image_name"]
        pixels[name] = array.astype(int)
        return name

    def blocks(size: int, block: int) -> np.ndarray:
        cells = rng.integers(0, 256, (size // block, size // block, 3), dtype=np.uint8)
        return np.kron(cells, np.ones((block, block, 1), np.uint8))

    ramp = np.linspace(40, 220, 512, dtype=np.float32)
    portrait = np.stack([ramp[None, :].repeat(512, 0), ramp[:, None].repeat(512, 1),
                         np.full((512, 512), 120, np.float32)], axis=-1).astype(np.uint8)
    return {"control": upload(blocks(64, 8)), "small": upload(blocks(32, 4)), "tiles": upload(blocks(48, 6)),
            "portrait": upload(portrait), "pixels": pixels}


# --- running a workflow both ways ------------------------------------------------------------------------------


def load(name: str, images: dict[str, str]) -> dict[str, Any]:
    """A workflow (a fixture here, else an example of dags/workflows) with its image nodes' images set (node id ->
    uploaded image name) and, for the example, small sizes and few steps."""
    path = WORKFLOWS / name if (WORKFLOWS / name).is_file() else EXAMPLES / name
    document = json.loads(path.read_text())
    values = {(node_id, "image"): {"image_name": image} for node_id, image in images.items()}
    if path.parent == EXAMPLES:
        values.update(SMALL[name])
    for node in document["nodes"]:
        for (node_id, field), value in values.items():
            if node["id"] == node_id:
                node["data"]["inputs"][field]["value"] = value
    return document


def drop_edge(document: dict[str, Any], target: str, handle: str) -> dict[str, Any]:
    """The workflow without the edge into ``target.handle`` (a variant to show what that input does)."""
    copy = json.loads(json.dumps(document))
    copy["edges"] = [e for e in copy["edges"] if (e["target"], e["targetHandle"]) != (target, handle)]
    return copy


class EngineRun:
    """A workflow run in the engine, as a worker runs it (models bound by name), over the tenant's library."""

    def __init__(self, document: dict[str, Any], manager: Any, artifacts: Path) -> None:
        from invokeai_provider.core.context import RunContext
        from invokeai_provider.graph.engine import run_graph
        from invokeai_provider.graph.graph import Graph
        from invokeai_provider.graph.workflow import load_document
        from invokeai_provider.models.model_manager.binding import bind_model_fields
        from invokeai_provider.storage.base import RunStore, backend_for_uri

        graph = Graph.from_dict(bind_model_fields(load_document(json.dumps(document)).graph.to_dict(),
                                                  manager.registry))
        self.run = RunContext(store=RunStore(backend_for_uri(artifacts.as_uri()), dag_id="engine",
                                             run_id=uuid.uuid4().hex), services={"models": manager})
        self.state = run_graph(graph, self.run)

    def outputs(self, node_id: str) -> list[Any]:
        return self.state.outputs_of(node_id)

    def pixels(self, image: Any, mode: str = "RGB") -> np.ndarray:
        """An image output's (or ImageField's) pixels."""
        field = getattr(image, "image", image)
        data = self.run.store.read("images", field.image_name)
        return np.asarray(Image.open(io.BytesIO(data)).convert(mode)).astype(int)

    def image(self, node_id: str) -> np.ndarray:
        [output] = self.outputs(node_id)
        return self.pixels(output)


def both_ways(name: str, images: dict[str, str], final: str, manager: Any, artifacts: Path,
              airflow_run: Callable[..., dict[str, Any]], tmp_path: Path,
              tolerance: int = 0) -> tuple[EngineRun, np.ndarray]:
    """Runs the workflow in the engine and through Airflow; checks the run and that the ``final`` node's image
    is the same both ways (within ``tolerance`` levels). Returns the engine run and the final image."""
    document = load(name, images)
    path = tmp_path / name
    path.write_text(json.dumps(document))
    engine = EngineRun(document, manager, artifacts)
    run = airflow_run(path, dag_id=path.stem,
                      extra_env={"AIRFLOW__INVOKEAI__MODEL_ROOT": manager.registry.root.as_uri()})
    assert run["state"] == "success" and set(task_states(run).values()) == {"success"}
    [record] = [i for i in run["images"] if i["node_id"] == final]
    with Image.open(uri_path(record["uri"])) as png:
        through_airflow = np.asarray(png.convert("RGB")).astype(int)
    mine = engine.image(final)
    assert (record["width"], record["height"]) == (mine.shape[1], mine.shape[0])
    assert np.abs(through_airflow - mine).max() <= tolerance  # the same graph, the same image
    assert len(np.unique(mine.reshape(-1, 3), axis=0)) > 16  # a picture, not a flat colour
    return engine, mine


# --- the workflows ---------------------------------------------------------------------------------------------


def test_canny_and_depth_controlnets(uploads, manager, artifact_root, airflow_run, tmp_path) -> None:
    name = "sd15-canny-depth-controlnets.json"
    engine, image = both_ways(name, {"control_image": uploads["control"]}, "decode", manager, artifact_root,
                              airflow_run, tmp_path)
    assert image.shape == (64, 64, 3)
    edges = engine.image("canny")
    assert set(np.unique(edges)) == {0, 255} and (edges == 255).mean() > 0.02  # the blocks' edges
    depth = engine.pixels(engine.outputs("depth")[0], "L")
    assert depth.shape == (64, 64) and depth.min() == 0 and depth.max() == 255  # stretched to the full range
    [control] = engine.outputs("controls")
    assert [c.control_weight for c in control.collection] == [0.75, 0.5]
    plain = EngineRun(drop_edge(load(name, {"control_image": uploads["control"]}), "denoise", "control"), manager,
                      artifact_root).image("decode")
    assert np.abs(plain - image).max() > 5  # the ControlNets steer the image


def test_esrgan_then_canny_controlnet_image_to_image(uploads, manager, artifact_root, airflow_run,
                                                     tmp_path) -> None:
    import torch

    from invokeai_provider.models.upscalers.rrdb import build_esrgan, upscale
    from invokeai_provider.operators.upscale.esrgan import ESRGAN_DIR

    engine, image = both_ways("sd15-esrgan-canny-img2img.json", {"input": uploads["small"]}, "decode", manager,
                              artifact_root, airflow_run, tmp_path)
    assert image.shape == (64, 64, 3)  # 2x the 32 px input
    source = uploads["pixels"][uploads["small"]]
    net = build_esrgan(ESRGAN)
    net.load_state_dict(torch.load(manager.registry.root / ESRGAN_DIR / ESRGAN)["params_ema"])
    with torch.no_grad():
        direct = upscale(net.eval(), torch.from_numpy(source / 255.0).float().permute(2, 0, 1)[None])
    direct = (direct[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(engine.image("esrgan") - direct).max() <= 1  # the installed checkpoint enlarged the input
    assert engine.image("canny").shape == (64, 64, 3)
    [latents] = engine.outputs("encode")
    assert (latents.width, latents.height) == (64, 64)


def test_face_detailer_changes_only_the_face(uploads, manager, artifact_root, airflow_run, tmp_path) -> None:
    engine, image = both_ways("sd15-face-detailer.json", {"input": uploads["portrait"]}, "paste", manager,
                              artifact_root, airflow_run, tmp_path)
    original = uploads["pixels"][uploads["portrait"]]
    assert image.shape == original.shape == (512, 512, 3)
    [face] = engine.outputs("face")
    assert face.width == face.height == 256 and (face.x, face.y) != (0, 0)  # a square crop inside the image
    mask = engine.pixels(face.mask, "L")
    assert mask.shape == (256, 256) and mask.min() == 0 and mask.max() == 255
    changed = np.abs(image - original).max(axis=-1) > 0
    box = np.zeros_like(changed)
    box[face.y:face.y + face.height, face.x:face.x + face.width] = True
    assert changed[box].mean() > 0.05 and not changed[~box].any()  # the face was redone, nothing outside its box
    inside = changed[face.y:face.y + face.height, face.x:face.x + face.width]
    assert not inside[mask == 255].any() and inside[mask == 0].mean() > 0.5  # and only through the face mask
    [ip] = engine.outputs("ip")
    assert ip.ip_adapter.weight == 0.6
    assert engine.image("face_small").shape == (64, 64, 3) and engine.image("face_big").shape == (256, 256, 3)


def test_tiled_upscale_tiles_merge_without_gaps(uploads, manager, artifact_root, airflow_run, tmp_path) -> None:
    # Airflow runs the iteration's four paths in one task, their denoise steps batched into shared UNet passes,
    # where the engine here runs them one by one: a few pixels may round one level apart (7 of 9216 seen)
    engine, image = both_ways("sd15-tiled-upscale.json", {"input": uploads["tiles"]}, "merge", manager,
                              artifact_root, airflow_run, tmp_path, tolerance=1)
    assert image.shape == (96, 96, 3)  # 2x the 48 px input
    pairs = [p.tile_with_image for p in engine.outputs("pair")]
    assert len(pairs) == 4 and len(engine.outputs("decode")) == 4  # 2 x 2 tiles of 64 px, 32 px overlap
    cover = np.zeros((96, 96), int)
    low, high = np.full(image.shape, 255), np.zeros(image.shape, int)
    alone = np.zeros(image.shape, int)
    for pair in pairs:
        c = pair.tile.coords
        tile = engine.pixels(pair.image)
        assert tile.shape == (c.bottom - c.top, c.right - c.left, 3) == (64, 64, 3)
        cover[c.top:c.bottom, c.left:c.right] += 1
        area = (slice(c.top, c.bottom), slice(c.left, c.right))
        low[area], high[area] = np.minimum(low[area], tile), np.maximum(high[area], tile)
        alone[area] = tile
    assert cover.min() >= 1  # no gaps
    single = cover == 1
    assert single.any() and np.array_equal(image[single], alone[single])  # a lone tile's pixels as decoded
    overlap = cover > 1
    assert ((image[overlap] >= low[overlap] - 1) & (image[overlap] <= high[overlap] + 1)).all()  # blends
    tiles = [engine.pixels(p.image) for p in pairs]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(tiles, tiles[1:]))


def test_multidiffusion_sdxl_upscale(uploads, manager, artifact_root, airflow_run, tmp_path) -> None:
    name = "sdxl-multidiffusion-upscale.json"
    engine, image = both_ways(name, {"input": uploads["tiles"]}, "decode", manager, artifact_root, airflow_run,
                              tmp_path)
    assert image.shape == (96, 96, 3)  # 2x the 48 px input
    [latents] = engine.outputs("denoise")
    assert (latents.width, latents.height) == (96, 96)
    plain = EngineRun(drop_edge(load(name, {"input": uploads["tiles"]}), "denoise", "control"), manager,
                      artifact_root).image("decode")
    assert np.abs(plain - image).max() > 3  # the ControlNet steers every tile
    one_tile = load(name, {"input": uploads["tiles"]})
    [denoise] = [n for n in one_tile["nodes"] if n["id"] == "denoise"]
    denoise["data"]["inputs"]["tile_width"]["value"] = denoise["data"]["inputs"]["tile_height"]["value"] = 1024
    assert np.abs(EngineRun(one_tile, manager, artifact_root).image("decode") - image).max() > 0  # 2 x 2 tiles ran


def test_an_invokeai_4_workflow_with_canny_image_processor(uploads, manager, artifact_root, airflow_run,
                                                           tmp_path) -> None:
    """Saved by InvokeAI 4.x (meta 3.0.0, older node versions): its canny_image_processor runs as
    canny_edge_detection and feeds the ControlNet; the image is the current nodes' image."""
    name = "sd15-old-canny-controlnet.json"
    images = {"control_image": uploads["control"]}
    old = load(name, images)
    [canny] = [n for n in old["nodes"] if n["id"] == "canny"]
    assert canny["data"]["type"] == "canny_image_processor" and old["meta"]["version"] == "3.0.0"
    engine, image = both_ways(name, images, "decode", manager, artifact_root, airflow_run, tmp_path)
    assert image.shape == (64, 64, 3)

    def current(document: dict[str, Any]) -> dict[str, Any]:
        [node] = [n for n in document["nodes"] if n["id"] == "canny"]
        inputs = node["data"]["inputs"]
        node["data"].update(type="canny_edge_detection", version="1.0.0",
                            inputs={k: inputs[k] for k in ("board", "metadata", "image", "low_threshold",
                                                           "high_threshold")})
        return document

    assert np.array_equal(EngineRun(current(load(name, images)), manager, artifact_root).image("decode"), image)
    plain = EngineRun(drop_edge(load(name, images), "denoise", "control"), manager, artifact_root).image("decode")
    assert np.abs(plain - image).max() > 3
