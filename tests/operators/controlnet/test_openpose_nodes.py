"""dw_openpose_detection: the declaration matches InvokeAI 6.11; tiny ONNX stand-ins with the real DWPose
models' input/output names and shapes (``images`` [1,3,640,640] -> ``output`` [1,8400,85]; ``input``
[1,3,384,288] -> ``simcc_x`` [1,133,576], ``simcc_y`` [1,133,768]), built to return known boxes and SimCC
peaks, give OpenPose drawings with the expected colours at the expected places."""

from __future__ import annotations

import colorsys
import io

import pytest

from helpers import only_output, put_image

from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.core.registry import InvocationRegistry

np = pytest.importorskip("numpy")
pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
Image = pytest.importorskip("PIL.Image")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

FOLDER = "core/yzd-v/DWPose"
DET, POSE = "yolox_l.onnx", "dw-ll_ucoco_384.onnx"
W, H = 128, 96  # the test image; letterboxed into 640x640 at ratio 5
RATIO = 5.0
ANCHORS = 80 * 80 + 40 * 40 + 20 * 20
PERSON_BOX = (40.0, 16.0, 88.0, 80.0)  # 48x64, the pose model's 3:4 aspect: the crop is 60x80 at (64, 48)

# COCO-WholeBody indices of the points the tiny pose model reports, and where (image pixels, for PERSON_BOX).
NOSE, L_SHOULDER, R_SHOULDER, R_ELBOW = 0, 5, 6, 8
FIGURE = {NOSE: (64, 20), R_SHOULDER: (49, 40), L_SHOULDER: (79, 40), R_ELBOW: (44, 65)}
LEFT_HAND = {91: (92, 70), 92: (92, 85), 96: (82, 80)}  # wrist, thumb joint 1, index joint 1
FACE = {40: (56, 14), 50: (72, 14)}

RED, ORANGE, AMBER, YELLOW, LIME = (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (85, 255, 0)


def dim(colour):
    return tuple(int(c * 0.6) for c in colour)


# --- tiny ONNX models --------------------------------------------------------------------------------------


def _constant_model(input_name, input_shape, outputs):
    """An ONNX model whose outputs are the given constants (plus 0 x the input's mean, so it reads it)."""
    nodes = [helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    graph_outputs = []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_value"))
        nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                                                            input_shape)],
                              graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _anchor(stride, col, row):
    offset = {8: 0, 16: 80 * 80, 32: 80 * 80 + 40 * 40}[stride]
    return offset + row * (640 // stride) + col


def detector(*boxes, ratio=RATIO):
    """A YOLOX stand-in reporting ``(box in image pixels, objectness, class scores {class: score}, stride)``
    for an image letterboxed at ``ratio``."""
    raw = np.zeros((1, ANCHORS, 85), np.float32)
    raw[..., 2:4] = -10.0
    for box, objectness, classes, stride in boxes:
        x1, y1, x2, y2 = (v * ratio for v in box)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        col, row = int(cx // stride), int(cy // stride)
        a = _anchor(stride, col, row)
        raw[0, a, :4] = (cx / stride - col, cy / stride - row, np.log((x2 - x1) / stride),
                         np.log((y2 - y1) / stride))
        raw[0, a, 4] = objectness
        for cls, score in classes.items():
            raw[0, a, 5 + cls] = score
    return _constant_model("images", [1, 3, 640, 640], {"output": raw})


def crop_of(box):
    """The pose crop (x0, y0, width) DWPose takes for a box: padded by 1.25, widened to 3:4."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    w, h = (box[2] - box[0]) * 1.25, (box[3] - box[1]) * 1.25
    w, h = (w, w * 4 / 3) if w > h * 0.75 else (h * 0.75, h)
    return cx - w / 2, cy - h / 2, w


def pose_model(points, box=PERSON_BOX, peak=1.0):
    """A pose stand-in whose SimCC peaks put COCO-WholeBody point k at ``points[k]`` (image pixels) for a
    person in ``box``; the other points have no positive response."""
    simcc_x, simcc_y = np.zeros((1, 133, 576)), np.zeros((1, 133, 768))
    x0, y0, width = crop_of(box)
    bins_per_pixel = 288 / width * 2
    for k, (x, y) in points.items():
        simcc_x[0, k, int(round((x - x0) * bins_per_pixel))] = peak
        simcc_y[0, k, int(round((y - y0) * bins_per_pixel))] = peak
    return _constant_model("input", [1, 3, 384, 288], {"simcc_x": simcc_x, "simcc_y": simcc_y})


# --- running ---------------------------------------------------------------------------------------------


@pytest.fixture
def models_run(tmp_path, run):
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    run.services["models"] = ModelManager(ModelRegistry(str(tmp_path / "models")), device="cpu")
    return run


def install(run, det=None, pose=None):
    folder = run.services["models"].registry.root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    if det is not None:
        (folder / DET).write_bytes(det)
    if pose is not None:
        (folder / POSE).write_bytes(pose)


def standard(run):
    install(run, detector((PERSON_BOX, 0.9, {0: 0.9}, 32)), pose_model({**FIGURE, **LEFT_HAND, **FACE}))


def photo(width=W, height=H, seed=0):
    return (np.random.RandomState(seed).rand(height, width, 3) * 255).astype("uint8")


def pose(run, image=None, **fields):
    image = photo() if image is None else image
    out = only_output(run, {"type": "dw_openpose_detection", "image": put_image(run, "in.png", image), **fields})
    result = Image.open(io.BytesIO(run.store.read("images", out.image.image_name)))
    result.load()
    return out, result


def at(image, x, y):
    return tuple(int(c) for c in np.asarray(image)[int(round(y)), int(round(x))])


def mid(a, b):
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)


# --- declaration -----------------------------------------------------------------------------------------


def test_declaration_matches_invokeai():
    cls = InvocationRegistry.get_invocation_class("dw_openpose_detection")
    ui = cls.UIConfig
    assert (ui.title, ui.version, ui.category, ui.tags) == ("DW Openpose Detection", "1.1.1", "controlnet",
                                                            ["controlnet", "dwpose", "openpose"])
    assert ui.gpu
    assert cls.get_output_annotation().get_type() == "image_output"
    assert list(cls.input_fields()) == ["board", "metadata", "image", "draw_body", "draw_face", "draw_hands"]
    assert [cls.input_fields()[f].default for f in ("draw_body", "draw_face", "draw_hands")] == [True, False, False]



# --- pipeline pieces -------------------------------------------------------------------------------------


def test_detector_decoding_letterbox_and_nms():
    from invokeai_provider.models.annotators.dw_openpose import decode_detections, letterbox, nms

    batch, ratio = letterbox(photo())
    assert batch.shape == (1, 3, 640, 640) and batch.dtype == np.float32 and ratio == RATIO
    assert (batch[0, :, 480:, :] == 114).all() and not (batch[0, :, :480, :] == 114).all()  # 96*5 = 480 rows

    raw = onnx.numpy_helper.to_array(onnx.load_from_string(detector(
        (PERSON_BOX, 0.9, {0: 0.9}, 32),
        ((41.0, 17.0, 89.0, 81.0), 0.8, {0: 0.8}, 16),  # overlaps the first: suppressed
        ((5.0, 5.0, 30.0, 40.0), 0.9, {2: 0.9}, 8),  # another class: ignored
        ((95.0, 10.0, 120.0, 60.0), 0.5, {0: 0.5}, 8),  # a person scored 0.25: dropped after NMS
    )).graph.initializer[1])
    boxes = decode_detections(raw, RATIO, path=None)
    assert boxes.shape == (1, 4)
    assert np.allclose(boxes[0], PERSON_BOX, atol=1e-3)
    assert nms(np.array([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 30, 30.0]]), np.array([0.5, 0.9, 0.7]), 0.45) == [1, 2]


def test_execution_providers_prefer_cuda_only_when_it_is_there(monkeypatch):
    import onnxruntime

    from invokeai_provider.models.annotators.dw_openpose import execution_providers

    assert execution_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert execution_providers("cuda") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert execution_providers("cuda:0") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert execution_providers("cpu") == ["CPUExecutionProvider"]


# --- drawing ---------------------------------------------------------------------------------------------


def test_body_limbs_and_joints_have_openpose_colours(models_run):
    standard(models_run)
    out, image = pose(models_run)
    assert image.mode == "RGB" and image.size == (W, H) and (out.width, out.height) == (W, H)
    neck = mid(FIGURE[L_SHOULDER], FIGURE[R_SHOULDER])
    # joints, full colour (drawn after the limbs are dimmed): nose, neck, r-shoulder, r-elbow, l-shoulder
    assert at(image, *FIGURE[NOSE]) == RED
    assert at(image, *neck) == ORANGE
    assert at(image, *FIGURE[R_SHOULDER]) == AMBER
    assert at(image, *FIGURE[R_ELBOW]) == YELLOW
    assert at(image, *FIGURE[L_SHOULDER]) == LIME
    # limbs, dimmed to 60 %: neck-r-shoulder, neck-l-shoulder, r-shoulder-r-elbow, neck-nose
    assert at(image, *mid(neck, FIGURE[R_SHOULDER])) == dim(RED)
    assert at(image, *mid(neck, FIGURE[L_SHOULDER])) == dim(ORANGE)
    assert at(image, *mid(FIGURE[R_SHOULDER], FIGURE[R_ELBOW])) == dim(AMBER)
    assert at(image, *mid(neck, FIGURE[NOSE])) == dim((0, 0, 255))
    # nothing else: no hands or face by default, black far from the figure
    pixels = np.asarray(image)
    assert not pixels[:, 86:].any() and not pixels[72:].any()
    colours = {tuple(c) for c in pixels.reshape(-1, 3)}
    assert colours <= {(0, 0, 0), RED, ORANGE, AMBER, YELLOW, LIME, dim(RED), dim(ORANGE), dim(AMBER),
                       dim((0, 0, 255))}


def test_drawing_is_deterministic_and_the_input_is_not_drawn_on(models_run):
    standard(models_run)
    _, first = pose(models_run, image=photo(seed=1))
    _, second = pose(models_run, image=photo(seed=2))
    assert first.tobytes() == second.tobytes()  # the stand-in models ignore the pixels; the canvas is black


def test_hands_and_face_only_when_asked(models_run):
    standard(models_run)
    _, hands = pose(models_run, draw_body=False, draw_hands=True)
    wrist, thumb, index = LEFT_HAND[91], LEFT_HAND[92], LEFT_HAND[96]
    for point in (wrist, thumb, index):
        assert at(hands, *point) == (0, 0, 255)  # hand points are blue
    bone0 = tuple(round(c * 255) for c in colorsys.hsv_to_rgb(0 / 20, 1, 1))
    bone4 = tuple(round(c * 255) for c in colorsys.hsv_to_rgb(4 / 20, 1, 1))
    assert np.abs(np.subtract(at(hands, *mid(wrist, thumb)), bone0)).max() <= 2
    assert np.abs(np.subtract(at(hands, *mid(wrist, index)), bone4)).max() <= 2
    assert not np.asarray(hands)[:, :77].any()  # no body (the index joint at x=82 reaches x=78)

    _, face = pose(models_run, draw_body=False, draw_face=True)
    pixels = np.asarray(face)
    for point in FACE.values():
        assert at(face, *point) == (255, 255, 255)
    assert {tuple(c) for c in pixels.reshape(-1, 3)} == {(0, 0, 0), (255, 255, 255)}
    assert pixels.any(axis=2).sum() == 2 * 29  # two filled radius-3 discs

    _, nothing = pose(models_run, draw_body=False)
    assert not np.asarray(nothing).any()

    _, everything = pose(models_run, draw_body=True, draw_hands=True, draw_face=True)
    assert at(everything, *FIGURE[NOSE]) == RED and at(everything, *wrist) == (0, 0, 255)
    assert at(everything, *FACE[40]) == (255, 255, 255)


def test_output_has_the_input_size(models_run):
    box = (10.0, 5.0, 40.0, 45.0)
    install(models_run, detector((box, 0.9, {0: 0.9}, 16), ratio=640 / 70), pose_model({NOSE: (25, 15)}, box=box))
    _, image = pose(models_run, image=photo(50, 70))
    assert image.size == (50, 70)
    assert at(image, 25, 15) == RED


def test_two_people_are_both_drawn(models_run):
    second = (PERSON_BOX[0] + 30, PERSON_BOX[1], PERSON_BOX[2] + 30, PERSON_BOX[3])
    install(models_run, detector((PERSON_BOX, 0.9, {0: 0.9}, 32), (second, 0.8, {0: 0.8}, 8), ratio=4.0),
            pose_model({NOSE: FIGURE[NOSE]}))
    _, image = pose(models_run, image=photo(160, 96))
    assert at(image, *FIGURE[NOSE]) == RED
    assert at(image, FIGURE[NOSE][0] + 30, FIGURE[NOSE][1]) == RED  # same pose, the second crop


def test_no_person_poses_the_whole_image_and_low_scores_draw_nothing(models_run):
    whole = (0.0, 0.0, float(W), float(H))
    # only a non-person box and a weak person: DWPose falls back to one pose over the whole image
    install(models_run, detector(((5.0, 5.0, 30.0, 40.0), 0.9, {1: 0.9}, 8),
                                 ((60.0, 10.0, 90.0, 60.0), 0.5, {0: 0.5}, 8)),
            pose_model({NOSE: (64, 30)}, box=whole))
    _, image = pose(models_run)
    assert at(image, 64, 30) == RED
    assert np.asarray(image).any(axis=2).sum() == 49  # just the nose: a radius-4 disc

    install(models_run, pose=pose_model(FIGURE, box=whole, peak=0.25))  # every point under the 0.3 threshold
    models_run.services["models"].cache.clear()
    _, black = pose(models_run)
    assert black.size == (W, H) and not np.asarray(black).any()


# --- errors ----------------------------------------------------------------------------------------------


def test_missing_files_name_node_field_and_file(models_run):
    with pytest.raises(NodeExecutionError, match=r"node n \(dw_openpose_detection\): field image: no model at "
                                                 r".*core/yzd-v/DWPose \(missing yolox_l\.onnx\)"):
        pose(models_run)
    install(models_run, det=detector())
    with pytest.raises(NodeExecutionError, match=r"field image: no model at .*core/yzd-v/DWPose \(missing "
                                                 r"dw-ll_ucoco_384\.onnx\).*whole-body pose model"):
        pose(models_run)


def test_bad_models_name_node_field_and_file(models_run):
    install(models_run, det=b"not an onnx model", pose=pose_model(FIGURE))
    with pytest.raises(NodeExecutionError, match=r"node n \(dw_openpose_detection\): field image: the DWPose "
                                                 r"detector model .*yolox_l\.onnx: cannot load as an ONNX model"):
        pose(models_run)

    models_run.services["models"].cache.clear()
    install(models_run, det=detector(), pose=detector())  # a detector where the pose model belongs
    with pytest.raises(NodeExecutionError, match=r"field image: the DWPose pose model .*dw-ll_ucoco_384\.onnx: "
                                                 r"expected two SimCC outputs"):
        pose(models_run)

    models_run.services["models"].cache.clear()
    wrong = _constant_model("images", [1, 3, 640, 640], {"output": np.zeros((1, 100, 85))})
    install(models_run, det=wrong, pose=pose_model(FIGURE))
    with pytest.raises(NodeExecutionError, match=r"field image: the DWPose model .*yolox_l\.onnx: expected a "
                                                 r"detector output of shape \[1, 8400, 5 \+ classes\], got "
                                                 r"\[1, 100, 85\]"):
        pose(models_run)
