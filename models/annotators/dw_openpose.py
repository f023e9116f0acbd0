"""DWPose whole-body pose estimation on two ONNX models, and the OpenPose-style drawing ControlNets expect.

InvokeAI's ``dw_openpose_detection`` runs the hub repo ``yzd-v/DWPose``'s ``yolox_l.onnx`` (a YOLOX person
detector: input ``[1, 3, 640, 640]`` raw 0..255 pixels, output ``[1, 8400, 85]`` of per-anchor box offsets,
objectness and 80 class scores) and ``dw-ll_ucoco_384.onnx`` (an RTMPose whole-body model: input
``[1, 3, 384, 288]`` ImageNet-normalised crop, outputs SimCC ``[1, 133, 576]`` and ``[1, 133, 768]``, two bins
per pixel) with onnxruntime. This module is the same pipeline written here: letterbox and decode the
detector, class-0 NMS, one affine crop per person (the whole image when none is found), SimCC arg-max
decoding, the COCO-WholeBody to OpenPose keypoint order with a synthesised neck, and the drawing (body
limbs and joints, hands, face points) on a black canvas of the image's size. OpenCV and onnxruntime are
imported where used, so importing this module stays light.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from invokeai_provider.errors import exception_summary

DWPOSE_REPO = "yzd-v/DWPose"
DETECTOR_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"

DETECTOR_SIZE = (640, 640)  # (height, width) of the letterboxed detector input
DETECTOR_STRIDES = (8, 16, 32)
LETTERBOX_FILL = 114
NMS_IOU = 0.45
CANDIDATE_SCORE = 0.1  # boxes kept for NMS
PERSON_SCORE = 0.3  # boxes kept after NMS (class 0, "person", only)
BOX_PADDING = 1.25
PIXEL_MEAN = np.array([123.675, 116.28, 103.53])
PIXEL_STD = np.array([58.395, 57.12, 57.375])
SIMCC_SPLIT = 2.0
VISIBLE = 0.3  # keypoint score above which a point is drawn

BODY_POINTS = 18  # OpenPose body order, neck included
FACE = slice(24, 92)  # 68 face landmarks in the 134-point list (133 COCO-WholeBody points + the neck)
LEFT_HAND = slice(92, 113)
RIGHT_HAND = slice(113, 134)

# Where each OpenPose body point comes from in COCO-WholeBody order once the neck is inserted at 17.
OPENPOSE_FROM_COCO = {1: 17, 2: 6, 3: 8, 4: 10, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16, 12: 13, 13: 15, 14: 2, 15: 1,
                      16: 4, 17: 3}
# OpenPose limbs as pairs of 0-based body points; only the first 17 are drawn (the ear-shoulder pair is not).
BODY_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
              (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
BODY_COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
LIMB_HALF_WIDTH = 4
LIMB_DIM = 0.6  # limbs are dimmed before the joints are drawn over them
JOINT_RADIUS = 4
# Hand bones: wrist (0) to each finger's four joints.
HAND_BONES = tuple(pair for finger in range(5)
                   for pair in ((0 if j == 0 else 4 * finger + j, 4 * finger + j + 1) for j in range(4)))
HAND_POINT_COLOUR = (0, 0, 255)
FACE_COLOUR = (255, 255, 255)
FACE_RADIUS = 3
EDGE_EPS = 0.01


class DWPoseModelError(ValueError):
    """An ONNX file that cannot be loaded or whose inputs/outputs are not those of the DWPose models."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


class OnnxModel:
    """An onnxruntime session as a model-cache entry. It has no torch parameters, so the cache sizes it at
    0 bytes and never moves it: the session is created on its execution provider once."""

    def __init__(self, session: Any, path: Path) -> None:
        self.session = session
        self.path = path
        self.input_name: str = session.get_inputs()[0].name
        self.input_shape: list[Any] = list(session.get_inputs()[0].shape)
        self.output_names: list[str] = [o.name for o in session.get_outputs()]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        try:
            return self.session.run(self.output_names, {self.input_name: batch})
        except Exception as exc:  # onnxruntime's own exception types are not importable by a stable name
            raise DWPoseModelError(self.path, f"inference failed: {exception_summary(exc)}") from None


def execution_providers(device: str) -> list[str]:
    """CUDA first when the run's device is a GPU and this onnxruntime has the CUDA provider; else the CPU."""
    import onnxruntime as ort

    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def load_onnx(path: Path, device: str, *, kind: str) -> OnnxModel:
    """An inference session for ``path``, checked to have the detector's (``kind="detector"``) or the pose
    model's (``kind="pose"``) input and output layout."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=execution_providers(device))
    except Exception as exc:
        raise DWPoseModelError(path, f"cannot load as an ONNX model: {exception_summary(exc)}") \
            from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise DWPoseModelError(path, f"expected one image input [1, 3, H, W], got "
                                     f"{[(i.name, i.shape) for i in inputs]}")
    if kind == "detector" and (len(outputs) < 1 or len(outputs[0].shape) != 3):
        raise DWPoseModelError(path, f"expected a YOLOX output [1, anchors, 5 + classes], got "
                                     f"{[(o.name, o.shape) for o in outputs]}")
    if kind == "pose":
        height, width = inputs[0].shape[2:]
        if not (isinstance(height, int) and isinstance(width, int)):
            raise DWPoseModelError(path, f"expected a fixed input size [1, 3, H, W], got {inputs[0].shape}")
        if len(outputs) != 2:
            raise DWPoseModelError(path, f"expected two SimCC outputs (x and y), got "
                                         f"{[(o.name, o.shape) for o in outputs]}")
    return OnnxModel(session, path)


# --- detector --------------------------------------------------------------------------------------------


def letterbox(image: np.ndarray, size: tuple[int, int] = DETECTOR_SIZE) -> tuple[np.ndarray, float]:
    """The image scaled to fit ``size`` (height, width) keeping its aspect, top-left on a grey (114)
    canvas, as a float32 CHW batch; and the scale used."""
    import cv2

    height, width = image.shape[:2]
    ratio = min(size[0] / height, size[1] / width)
    new_w, new_h = int(width * ratio), int(height * ratio)
    canvas = np.full((size[0], size[1], 3), LETTERBOX_FILL, dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32), ratio


def anchor_grid(size: tuple[int, int] = DETECTOR_SIZE,
                strides: tuple[int, ...] = DETECTOR_STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Per anchor, its cell (x, y) and its stride, in YOLOX's order: strides ascending, rows then columns."""
    cells, cell_strides = [], []
    for stride in strides:
        ys, xs = np.mgrid[0:size[0] // stride, 0:size[1] // stride]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        cell_strides.append(np.full(xs.size, stride))
    return np.concatenate(cells).astype(np.float64), np.concatenate(cell_strides).astype(np.float64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression, best score first, with the inclusive-pixel (+1) box areas YOLOX uses."""
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    order = np.argsort(scores)[::-1]
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        top_left = np.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        overlap = np.prod(np.maximum(0.0, bottom_right - top_left + 1), axis=1)
        order = rest[overlap / (areas[best] + areas[rest] - overlap) <= iou]
    return keep


def decode_detections(raw: np.ndarray, ratio: float, path: Path) -> np.ndarray:
    """Person boxes (x1, y1, x2, y2) in image pixels from the detector's raw ``[1, anchors, 5 + classes]``."""
    cells, strides = anchor_grid()
    if raw.ndim != 3 or raw.shape[0] != 1 or raw.shape[1] != len(cells) or raw.shape[2] < 6:
        raise DWPoseModelError(path, f"expected a detector output of shape [1, {len(cells)}, 5 + classes], got "
                                     f"{list(raw.shape)}")
    pred = raw[0].astype(np.float64)
    centre = (pred[:, :2] + cells) * strides[:, None]
    half = np.exp(pred[:, 2:4]) * strides[:, None] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1) / ratio
    person = pred[:, 4] * pred[:, 5]  # objectness x class 0; other classes never survive the last filter
    candidates = person > CANDIDATE_SCORE
    boxes, person = boxes[candidates], person[candidates]
    if not len(boxes):
        return np.zeros((0, 4))
    kept = nms(boxes, person, NMS_IOU)
    boxes, person = boxes[kept], person[kept]
    return boxes[person > PERSON_SCORE]


def detect_people(detector: OnnxModel, image: np.ndarray) -> np.ndarray:
    batch, ratio = letterbox(image)
    return decode_detections(detector.run(batch)[0], ratio, detector.path)


# --- pose ------------------------------------------------------------------------------------------------


def crop_box(box: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The crop (centre, size) for a person box: padded by 1.25 and widened to the model's aspect."""
    centre = (box[:2] + box[2:]) / 2.0
    width, height = (box[2:] - box[:2]) * BOX_PADDING
    aspect = input_size[0] / input_size[1]
    size = np.array([width, width / aspect] if width > height * aspect else [height * aspect, height])
    return centre, size


def crop_matrix(centre: np.ndarray, size: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """The 2x3 affine map from image pixels to the crop: the crop's width onto the input width, centred."""
    s = input_size[0] / size[0]
    return np.array([[s, 0.0, input_size[0] / 2.0 - s * centre[0]],
                     [0.0, s, input_size[1] / 2.0 - s * centre[1]]])


def pose_input(image: np.ndarray, centre: np.ndarray, size: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    import cv2

    crop = cv2.warpAffine(image, crop_matrix(centre, size, input_size), (int(input_size[0]), int(input_size[1])),
                          flags=cv2.INTER_LINEAR)
    normalised = (crop - PIXEL_MEAN) / PIXEL_STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per keypoint, the arg-max bin on each axis in crop pixels (bins / split ratio) and the lower of the
    two peak values as its score; a point with no positive peak sits at -1 / split."""
    x, y = simcc_x[0], simcc_y[0]
    points = np.stack([x.argmax(axis=1), y.argmax(axis=1)], axis=1).astype(np.float32)
    scores = np.minimum(x.max(axis=1), y.max(axis=1))
    points[scores <= 0.0] = -1
    return points / SIMCC_SPLIT, scores


def estimate_poses(pose: OnnxModel, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """133 COCO-WholeBody keypoints (image pixels) and scores per person box; with no box, one pose for
    the whole image (as DWPose does)."""
    height, width = pose.input_shape[2:]
    input_size = (int(width), int(height))
    if not len(boxes):
        boxes = np.array([[0, 0, image.shape[1], image.shape[0]]], dtype=np.float64)
    all_points, all_scores = [], []
    for box in boxes:
        centre, size = crop_box(np.asarray(box, dtype=np.float64), input_size)
        outputs = pose.run(pose_input(image, centre, size, input_size))
        if len(outputs) != 2 or any(o.ndim != 3 or o.shape[:2] != outputs[0].shape[:2] for o in outputs):
            raise DWPoseModelError(pose.path, f"expected two SimCC outputs [1, keypoints, bins], got "
                                              f"{[list(o.shape) for o in outputs]}")
        if outputs[0].shape[1] != 133:
            raise DWPoseModelError(pose.path, f"expected 133 whole-body keypoints, got {outputs[0].shape[1]}")
        points, scores = decode_simcc(*outputs)
        all_points.append(points / np.array(input_size) * size + centre - size / 2)
        all_scores.append(scores)
    return np.array(all_points), np.array(all_scores)


def to_openpose(points: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """134 points per person: a neck (between the shoulders, visible when both are) inserted at 17 and the
    body reordered from COCO to OpenPose; the foot, face and hand points follow unchanged."""
    neck = points[:, [5, 6]].mean(axis=1)
    neck_score = ((scores[:, 5] > VISIBLE) & (scores[:, 6] > VISIBLE)).astype(scores.dtype)
    points = np.insert(points, 17, neck, axis=1)
    scores = np.insert(scores, 17, neck_score, axis=1)
    target, source = list(OPENPOSE_FROM_COCO), list(OPENPOSE_FROM_COCO.values())
    points[:, target], scores[:, target] = points[:, source], scores[:, source]
    return points, scores


# --- drawing ---------------------------------------------------------------------------------------------


def _pixel(value: float, extent: int) -> int:
    """A point's pixel coordinate as DWPose computes it (via coordinates normalised by the image size)."""
    return int(value / float(extent) * float(extent))


def draw_body(canvas: np.ndarray, points: np.ndarray, scores: np.ndarray) -> np.ndarray:
    import cv2

    height, width = canvas.shape[:2]
    visible = scores[:, :BODY_POINTS] > VISIBLE
    for limb, (a, b) in enumerate(BODY_LIMBS):
        for person in range(len(points)):
            if not (visible[person, a] and visible[person, b]):
                continue
            (xa, ya), (xb, yb) = (points[person, a] / (width, height) * (width, height),
                                  points[person, b] / (width, height) * (width, height))
            length = math.hypot(xa - xb, ya - yb)
            angle = math.degrees(math.atan2(ya - yb, xa - xb))
            polygon = cv2.ellipse2Poly((int((xa + xb) / 2), int((ya + yb) / 2)), (int(length / 2), LIMB_HALF_WIDTH),
                                       int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, BODY_COLOURS[limb])
    canvas = (canvas * LIMB_DIM).astype(np.uint8)
    for joint in range(BODY_POINTS):
        for person in range(len(points)):
            if visible[person, joint]:
                x, y = points[person, joint]
                cv2.circle(canvas, (_pixel(x, width), _pixel(y, height)), JOINT_RADIUS, BODY_COLOURS[joint],
                           thickness=-1)
    return canvas


def hand_bone_colour(bone: int) -> tuple[int, int, int]:
    """Bone ``bone`` of 20 in a rainbow: hue bone/20 of the way round, full saturation and value."""
    import cv2

    hsv = np.array([[[bone / float(len(HAND_BONES)) * 180, 255, 255]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])  # type: ignore[return-value]


def _hidden_to_minus_one(points: np.ndarray, scores: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel coordinates (truncated as DWPose does); points scored under 0.3 become off-canvas."""
    pixels = (points / (width, height) * (width, height)).astype(np.float64)
    pixels[scores < VISIBLE] = (-width, -height)
    return pixels


def draw_hands(canvas: np.ndarray, hands: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    import cv2

    height, width = canvas.shape[:2]
    for hand_points, hand_scores in hands:
        pixels = _hidden_to_minus_one(hand_points, hand_scores, width, height).astype(np.int64)
        for bone, (a, b) in enumerate(HAND_BONES):
            (x1, y1), (x2, y2) = pixels[a], pixels[b]
            if min(x1, y1, x2, y2) > EDGE_EPS:
                cv2.line(canvas, (int(x1), int(y1)), (int(x2), int(y2)), hand_bone_colour(bone), thickness=2)
        for x, y in pixels:
            if x > EDGE_EPS and y > EDGE_EPS:
                cv2.circle(canvas, (int(x), int(y)), JOINT_RADIUS, HAND_POINT_COLOUR, thickness=-1)
    return canvas


def draw_face(canvas: np.ndarray, faces: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    import cv2

    height, width = canvas.shape[:2]
    for face_points, face_scores in faces:
        for x, y in _hidden_to_minus_one(face_points, face_scores, width, height).astype(np.int64):
            if x > EDGE_EPS and y > EDGE_EPS:
                cv2.circle(canvas, (int(x), int(y)), FACE_RADIUS, FACE_COLOUR, thickness=-1)
    return canvas


def draw_pose(points: np.ndarray, scores: np.ndarray, height: int, width: int, *, body: bool = True,
              hands: bool = False, face: bool = False) -> np.ndarray:
    """The OpenPose picture of 134-point poses on a black ``height`` x ``width`` RGB canvas: body first
    (limbs dimmed, joints on top), then hands (all left hands, then all right hands), then face points."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    if body:
        canvas = draw_body(canvas, points, scores)
    if hands:
        canvas = draw_hands(canvas, [(p[LEFT_HAND], s[LEFT_HAND]) for p, s in zip(points, scores)]
                            + [(p[RIGHT_HAND], s[RIGHT_HAND]) for p, s in zip(points, scores)])
    if face:
        canvas = draw_face(canvas, [(p[FACE], s[FACE]) for p, s in zip(points, scores)])
    return canvas


def detect_and_draw(detector: OnnxModel, pose: OnnxModel, image: np.ndarray, *, body: bool = True,
                    hands: bool = False, face: bool = False) -> np.ndarray:
    """The whole node: people found, their whole-body poses estimated and drawn on black, as uint8 RGB of
    the image's size."""
    boxes = detect_people(detector, image)
    points, scores = to_openpose(*estimate_poses(pose, image, boxes))
    return draw_pose(points, scores, image.shape[0], image.shape[1], body=body, hands=hands, face=face)
