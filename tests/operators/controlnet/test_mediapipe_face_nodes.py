"""mediapipe_face_detection: the declaration matches InvokeAI 6.11; mediapipe's own FaceLandmarker runs a tiny
face_landmarker.task built here, whose two TFLite stand-ins have the real models' tensors (detector: uint8
[1,128,128,3] -> regressors [1,896,16], classificators [1,896,1]; landmarks: uint8 [1,256,256,3] -> 478 x 3
landmarks, face flag) and return chosen detections and meshes, so the drawn contours, pupils and face
filtering can be checked pixel by pixel."""

from __future__ import annotations

import math
import zipfile

import pytest

from helpers import only_output, put_image, stored_image

from invokeai_provider.errors import NodeExecutionError, NodeValidationError
from invokeai_provider.core.registry import InvocationRegistry

np = pytest.importorskip("numpy")
pytest.importorskip("cv2")
pytest.importorskip("mediapipe")
flatbuffers = pytest.importorskip("flatbuffers")
from mediapipe.tasks.metadata import schema_py_generated as tfl  # noqa: E402  (the TFLite schema)
from mediapipe.tasks.python.vision import FaceLandmarksConnections  # noqa: E402

from invokeai_provider.models.annotators import mediapipe_face as mpf  # noqa: E402

FOLDER = "core/mediapipe"
POINTS = 478
LANDMARK_INPUT = 256

# --- tiny TFLite models ------------------------------------------------------------------------------------


def constant_tflite(input_shape, outputs):
    """A TFLite model with a uint8 image input whose outputs are the given float32 constants (each one an ADD
    of the constant and 0)."""
    buffers, tensors = [tfl.BufferT()], []

    def tensor(name, shape, kind, data=None):
        entry = tfl.TensorT()
        entry.name, entry.shape, entry.type, entry.buffer = name, list(shape), kind, 0
        if data is not None:
            buffer = tfl.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8).tolist()
            buffers.append(buffer)
            entry.buffer = len(buffers) - 1
        tensors.append(entry)
        return len(tensors) - 1

    image = tensor("image", input_shape, tfl.TensorType.UINT8)
    zero = tensor("zero", [1], tfl.TensorType.FLOAT32, np.zeros(1, np.float32))
    add = tfl.OperatorCodeT()
    add.builtinCode = add.deprecatedBuiltinCode = tfl.BuiltinOperator.ADD
    add.version = 1
    operators, results = [], []
    for name, value in outputs.items():
        value = value.astype(np.float32)
        constant = tensor(f"{name}_value", value.shape, tfl.TensorType.FLOAT32, value)
        result = tensor(name, value.shape, tfl.TensorType.FLOAT32)
        op = tfl.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, [constant, zero], [result]
        op.builtinOptionsType, op.builtinOptions = tfl.BuiltinOptions.AddOptions, tfl.AddOptionsT()
        operators.append(op)
        results.append(result)
    graph = tfl.SubGraphT()
    graph.name, graph.tensors, graph.inputs, graph.outputs, graph.operators = "main", tensors, [image], results, operators
    model = tfl.ModelT()
    model.version, model.description = 3, "tiny stand-in"
    model.subgraphs, model.operatorCodes, model.buffers = [graph], [add], buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def logit(p):
    return math.log(p / (1 - p))


def anchor_centre(col, row):
    """The centre of a stride-8 anchor of the 128x128 short-range detector (a 16 x 16 grid, 2 per cell)."""
    return (col + 0.5) / 16, (row + 0.5) / 16


def detector(*faces):
    """A BlazeFace stand-in reporting ``(col, row, box size (fraction of the image), score)`` faces, each at a
    stride-8 anchor, its two eye keypoints level (so the face is not rotated)."""
    regressors = np.zeros((1, 896, 16))
    scores = np.full((1, 896, 1), -10.0)
    for col, row, size, score in faces:
        anchor = 2 * (row * 16 + col)
        regressors[0, anchor, 2:4] = size * 128
        regressors[0, anchor, 4:8] = (-0.1 * size * 128, 0, 0.1 * size * 128, 0)
        scores[0, anchor, 0] = logit(score)
    return constant_tflite([1, 128, 128, 3], {"regressors": regressors, "classificators": scores})


def ordered(group):
    """The points of a contour group in the order its edges chain them (each chain or loop in turn)."""
    neighbours: dict[int, list[int]] = {}
    for connection in getattr(FaceLandmarksConnections, group):
        neighbours.setdefault(connection.start, []).append(connection.end)
        neighbours.setdefault(connection.end, []).append(connection.start)
    chain: list[int] = []
    while len(chain) < len(neighbours):
        left = [p for p in neighbours if p not in chain]
        point = next((p for p in left if len(neighbours[p]) == 1), left[0])  # a chain's end, else any
        while point is not None:
            chain.append(point)
            point = next((p for p in neighbours[point] if p not in chain), None)
    return chain


# Where each drawn part of the template face sits, in the landmark model's crop (0..1): the centre and radius
# of a ring the group's points are spread on.
TEMPLATE = {
    "FACE_LANDMARKS_FACE_OVAL": ((0.5, 0.5), 0.4),
    "FACE_LANDMARKS_LEFT_EYE": ((0.66, 0.4), 0.06),
    "FACE_LANDMARKS_RIGHT_EYE": ((0.34, 0.4), 0.06),
    "FACE_LANDMARKS_LIPS": ((0.5, 0.7), 0.1),
}
BROWS = {"FACE_LANDMARKS_LEFT_EYEBROW": (0.58, 0.74), "FACE_LANDMARKS_RIGHT_EYEBROW": (0.26, 0.42)}  # x from, to
BROW_Y = 0.28


def template():
    """The 478 points of the template face in crop coordinates (0..1): rings for the oval, eyes and lips,
    level lines for the eyebrows, the pupils at the eye centres, every other point at the face's centre."""
    points = np.full((POINTS, 2), 0.5)
    for group, ((cx, cy), radius) in TEMPLATE.items():
        chain = ordered(group)
        for k, index in enumerate(chain):
            angle = 2 * math.pi * k / len(chain)
            points[index] = (cx + radius * math.cos(angle), cy + radius * math.sin(angle))
    for group, (x0, x1) in BROWS.items():
        chain = ordered(group)
        for k, index in enumerate(chain):
            points[index] = (x0 + (x1 - x0) * k / max(len(chain) - 1, 1), BROW_Y)
    points[mpf.RIGHT_PUPIL] = TEMPLATE["FACE_LANDMARKS_RIGHT_EYE"][0]
    points[mpf.LEFT_PUPIL] = TEMPLATE["FACE_LANDMARKS_LEFT_EYE"][0]
    return points


def landmark_model(points, presence=0.95):
    """A landmark-model stand-in that always reports ``points`` (crop coordinates, 0..1)."""
    raw = np.zeros((POINTS, 3))
    raw[:, :2] = points * LANDMARK_INPUT
    return constant_tflite([1, LANDMARK_INPUT, LANDMARK_INPUT, 3],
                           {"landmarks": raw.reshape(1, 1, 1, -1), "face_flag": np.full((1, 1, 1, 1), logit(presence))})


def task_bundle(det, landmarks):
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("face_detector.tflite", det)
        bundle.writestr("face_landmarks_detector.tflite", landmarks)
    return buffer.getvalue()


def in_image(points, col, row, size):
    """Where crop points land in the image (fractions) for a face detected at that anchor with that box: the
    landmarker crops a square 1.5 times the detected box around its centre."""
    cx, cy = anchor_centre(col, row)
    return np.stack([cx + (points[:, 0] - 0.5) * 1.5 * size, cy + (points[:, 1] - 0.5) * 1.5 * size], axis=1)


# --- running ---------------------------------------------------------------------------------------------


@pytest.fixture
def models_run(tmp_path, run):
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    run.services["models"] = ModelManager(ModelRegistry(str(tmp_path / "models")), device="cpu")
    return run


def install(run, data):
    folder = run.services["models"].registry.root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / mpf.TASK_FILE).write_bytes(data)


ONE_FACE = (8, 8, 0.5, 0.9)  # anchor col, row; box 0.5 of the image; score 0.9


def faces(run, size=256, image=None, **fields):
    image = np.random.RandomState(0).randint(0, 255, (size, size, 3)) if image is None else image
    out = only_output(run, {"type": "mediapipe_face_detection", "image": put_image(run, "in.png", image), **fields})
    result = stored_image(run, out)
    return out, result, np.asarray(result)


def pixel_of(point, width, height):
    return min(math.floor(point[0] * width), width - 1), min(math.floor(point[1] * height), height - 1)


def colour(pixels, point):
    x, y = pixel_of(point, pixels.shape[1], pixels.shape[0])
    return tuple(int(c) for c in pixels[y, x])


# --- declaration -----------------------------------------------------------------------------------------


def test_declaration_matches_invokeai():
    cls = InvocationRegistry.get_invocation_class("mediapipe_face_detection")
    ui = cls.UIConfig
    assert (ui.title, ui.version, ui.category, ui.tags) == ("MediaPipe Face Detection", "1.0.0", "controlnet",
                                                            ["controlnet", "face"])
    assert not ui.gpu  # mediapipe runs on the CPU
    assert cls.get_output_annotation().get_type() == "image_output"
    assert list(cls.input_fields()) == ["board", "metadata", "image", "max_faces", "min_confidence"]
    assert (cls.input_fields()["max_faces"].default, cls.input_fields()["min_confidence"].default) == (1, 0.5)


@pytest.mark.parametrize("field,value", [("max_faces", 0), ("min_confidence", 1.5), ("min_confidence", -0.1)])
def test_out_of_range_fields_are_refused_by_name(run, field, value):
    with pytest.raises(NodeValidationError, match=rf"mediapipe_face_detection.*{field}"):
        only_output(run, {"type": "mediapipe_face_detection", "image": {"image_name": "x.png"}, field: value})


def test_the_template_uses_separate_points_per_contour():
    seen: dict[int, str] = {}
    for group, _ in mpf.CONTOURS:
        for connection in getattr(FaceLandmarksConnections, group):
            for index in (connection.start, connection.end):
                assert seen.setdefault(index, group) == group, (index, group)
    assert mpf.RIGHT_PUPIL not in seen and mpf.LEFT_PUPIL not in seen


# --- drawing ---------------------------------------------------------------------------------------------


def test_contours_and_pupils_are_drawn_in_controlnet_aux_colours(models_run):
    install(models_run, task_bundle(detector(ONE_FACE), landmark_model(template())))
    out, image, pixels = faces(models_run)
    assert image.mode == "RGB" and image.size == (256, 256) and (out.width, out.height) == (256, 256)
    points = in_image(template(), *ONE_FACE[:3])
    expected = {"FACE_LANDMARKS_FACE_OVAL": mpf.HEAD, "FACE_LANDMARKS_LEFT_EYE": mpf.LEFT_EYE,
                "FACE_LANDMARKS_RIGHT_EYE": mpf.RIGHT_EYE, "FACE_LANDMARKS_LIPS": mpf.MOUTH,
                "FACE_LANDMARKS_LEFT_EYEBROW": mpf.LEFT_EYEBROW, "FACE_LANDMARKS_RIGHT_EYEBROW": mpf.RIGHT_EYEBROW}
    for group, rgb in expected.items():
        for index in ordered(group):
            assert colour(pixels, points[index]) == rgb, (group, index)
    # the pupils: 4x4 squares in the iris colours, over the eye centres (nothing else is drawn there)
    for index, rgb in ((mpf.RIGHT_PUPIL, mpf.RIGHT_IRIS), (mpf.LEFT_PUPIL, mpf.LEFT_IRIS)):
        assert colour(pixels, points[index]) == rgb
        assert (pixels.reshape(-1, 3) == rgb).all(axis=1).sum() == 16
    # a known point on the oval: its top is (0.5, 0.1) of the crop -> (0.53125, 0.53125 - 0.4 * 0.75) of the image
    assert colour(pixels, (0.53125, 0.53125 - 0.3)) == mpf.HEAD
    # only these colours, black far from the face (the centre, where the unused points sit, is not drawn)
    assert {tuple(c) for c in pixels.reshape(-1, 3)} == {(0, 0, 0), *expected.values(), mpf.LEFT_IRIS,
                                                         mpf.RIGHT_IRIS}
    assert not pixels[:, :20].any() and colour(pixels, (0.53125, 0.53125)) == (0, 0, 0)


def test_the_drawing_does_not_depend_on_the_pixels_only_on_the_landmarks(models_run):
    install(models_run, task_bundle(detector(ONE_FACE), landmark_model(template())))
    _, _, first = faces(models_run, image=np.zeros((256, 256, 3), np.uint8))
    _, _, second = faces(models_run, image=np.full((256, 256, 3), 200, np.uint8))
    assert first.any() and (first == second).all()


def test_faces_under_64_pixels_are_left_out(models_run):
    # box 0.125 of 256 px: the crop is 48 px, the oval (0.8 of it) 38 px across
    install(models_run, task_bundle(detector((8, 8, 0.125, 0.9)), landmark_model(template())))
    _, _, pixels = faces(models_run)
    assert not pixels.any()
    # the same face in an image four times the size is 154 px across: drawn
    _, _, pixels = faces(models_run, size=1024)
    assert pixels.any()


def test_min_confidence_is_the_detector_threshold(models_run):
    install(models_run, task_bundle(detector((8, 8, 0.5, 0.7)), landmark_model(template())))
    assert faces(models_run, min_confidence=0.6)[2].any()
    assert not faces(models_run, min_confidence=0.8)[2].any()


def test_a_face_the_landmark_model_calls_absent_is_not_drawn(models_run):
    install(models_run, task_bundle(detector(ONE_FACE), landmark_model(template(), presence=0.1)))
    assert not faces(models_run)[2].any()


def test_max_faces_limits_the_faces_drawn(models_run):
    left, right = (3, 8, 0.3, 0.9), (12, 8, 0.3, 0.8)
    install(models_run, task_bundle(detector(left, right), landmark_model(template())))
    size = 512
    left_oval = in_image(template(), *left[:3])[ordered("FACE_LANDMARKS_FACE_OVAL")[0]]
    right_oval = in_image(template(), *right[:3])[ordered("FACE_LANDMARKS_FACE_OVAL")[0]]
    _, _, both = faces(models_run, size=size, max_faces=2)
    assert colour(both, left_oval) == mpf.HEAD and colour(both, right_oval) == mpf.HEAD
    assert (both.reshape(-1, 3) == mpf.LEFT_IRIS).all(axis=1).sum() == 2 * 16
    _, _, one = faces(models_run, size=size)  # max_faces=1: the most confident face
    assert colour(one, left_oval) == mpf.HEAD and colour(one, right_oval) == (0, 0, 0)


def test_output_has_the_input_size_and_no_face_is_black(models_run):
    install(models_run, task_bundle(detector(), landmark_model(template())))
    out, image, pixels = faces(models_run, image=np.full((96, 160, 3), 128, np.uint8))
    assert image.size == (160, 96) and (out.width, out.height) == (160, 96) and not pixels.any()


def test_points_outside_the_image_draw_no_line():
    edges = {(0, 1): (255, 0, 0), (1, 2): (0, 255, 0)}
    face = np.zeros((POINTS, 2))
    face[0], face[1], face[2] = (0.1, 0.5), (0.9, 0.5), (1.2, 0.5)
    canvas = mpf.draw_faces([face], 100, 50, edges)
    assert tuple(canvas[25, 50]) == (255, 0, 0)
    assert not (canvas == (0, 255, 0)).all(axis=2).any()  # (1, 2) ends outside the image
    assert canvas[:, 92:].sum() == 0


# --- errors ----------------------------------------------------------------------------------------------


def test_a_missing_model_names_the_file_and_where_to_get_it(models_run):
    with pytest.raises(NodeExecutionError) as info:
        faces(models_run)
    text = str(info.value)
    assert "mediapipe_face_detection" in text and "field image" in text
    assert f"{FOLDER}/{mpf.TASK_FILE}".split("/")[-1] in text and "core/mediapipe" in text
    assert "storage.googleapis.com" in text


def test_a_broken_model_file_is_a_clear_error(models_run):
    install(models_run, b"not a task bundle")
    with pytest.raises(NodeExecutionError, match=r"field image: .*face_landmarker.task: cannot be loaded as a "
                                                 r"mediapipe face landmarker"):
        faces(models_run)
