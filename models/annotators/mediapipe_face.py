"""Face meshes drawn for face ControlNets: the pipeline behind ``mediapipe_face_detection``.

InvokeAI runs mediapipe 0.10.14's legacy FaceMesh solution (its models ship inside that wheel) and draws the
mesh's contours with controlnet_aux's colours. The legacy solutions need protobuf < 5, which cannot share an
environment with Airflow's OpenTelemetry packages, and mediapipe 0.10.30 removed them. So this runs
mediapipe's Tasks ``FaceLandmarker`` on ``face_landmarker.task``, which gives the same 478-point mesh (iris
points included, the same connection lists), and draws it the same way: face oval, eyes, eyebrows and lips
as 2-pixel lines, each pupil as a 4x4 square, on black; faces whose landmarks span fewer than 64 pixels are
left out. mediapipe and OpenCV are imported only when a face is detected or drawn.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from invokeai_provider.errors import exception_summary

TASK_FILE = "face_landmarker.task"
TASK_SOURCE = ("https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/"
               "face_landmarker.task")

MIN_FACE_PIXELS = 64  # controlnet_aux's min_face_size_pixels
LINE_THICKNESS = 2
PUPIL_HALF_WIDTH = 2
RIGHT_PUPIL, LEFT_PUPIL = 468, 473  # the iris centres of the 478-point mesh

# controlnet_aux's drawing specs, in the order it fills its edge -> colour table. Its colours are given for
# a BGR canvas that it flips to RGB at the end; these are the RGB colours that end up in the image.
HEAD, MOUTH = (10, 200, 10), (10, 180, 10)
LEFT_EYE, LEFT_EYEBROW, LEFT_IRIS = (10, 200, 180), (10, 220, 180), (10, 200, 250)
RIGHT_EYE, RIGHT_EYEBROW, RIGHT_IRIS = (180, 200, 10), (180, 220, 10), (250, 200, 10)
CONTOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("FACE_LANDMARKS_FACE_OVAL", HEAD),
    ("FACE_LANDMARKS_LEFT_EYE", LEFT_EYE),
    ("FACE_LANDMARKS_LEFT_EYEBROW", LEFT_EYEBROW),
    ("FACE_LANDMARKS_RIGHT_EYE", RIGHT_EYE),
    ("FACE_LANDMARKS_RIGHT_EYEBROW", RIGHT_EYEBROW),
    ("FACE_LANDMARKS_LIPS", MOUTH),
)
PUPILS = {RIGHT_PUPIL: RIGHT_IRIS, LEFT_PUPIL: LEFT_IRIS}


class FaceModelError(ValueError):
    """A face landmarker file mediapipe cannot load or run."""


def detect_faces(task_path: Path, rgb: np.ndarray, *, max_faces: int, min_confidence: float) -> list[np.ndarray]:
    """Each detected face's landmarks as a (points, 2) array of x, y in [0, 1] of the image's size.

    ``min_confidence`` is the face detector's threshold, as FaceMesh's ``min_detection_confidence`` is; the
    landmark model's own face-presence threshold keeps mediapipe's default (0.5), as FaceMesh does.
    """
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(task_path)), running_mode=vision.RunningMode.IMAGE,
        num_faces=max_faces, min_face_detection_confidence=min_confidence)
    try:
        landmarker = vision.FaceLandmarker.create_from_options(options)
    except (RuntimeError, ValueError, OSError) as exc:
        raise FaceModelError(f"{task_path}: cannot be loaded as a mediapipe face landmarker: "
                             f"{exception_summary(exc)}") from None
    with landmarker:
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb, dtype=np.uint8))
        try:
            result = landmarker.detect(image)
        except (RuntimeError, ValueError) as exc:
            raise FaceModelError(f"{task_path}: face landmark detection failed: {exception_summary(exc)}") from None
    return [np.array([(point.x, point.y) for point in face], dtype=np.float64) for face in result.face_landmarks]


def large_enough(face: np.ndarray, width: int, height: int, min_pixels: int = MIN_FACE_PIXELS) -> bool:
    """Whether the face's landmark box is at least ``min_pixels`` on its shorter side."""
    span = face.max(axis=0) - face.min(axis=0)
    return min(span[0] * width, span[1] * height) >= min_pixels


def _pixel(x: float, y: float, width: int, height: int) -> tuple[int, int] | None:
    """A normalized point as a pixel, or None outside the image (mediapipe's drawing rule)."""
    def inside(value: float) -> bool:
        return (value > 0 or math.isclose(0, value)) and (value < 1 or math.isclose(1, value))

    if not (inside(x) and inside(y)):
        return None
    return min(math.floor(x * width), width - 1), min(math.floor(y * height), height - 1)


@lru_cache(maxsize=1)
def contour_colours() -> dict[tuple[int, int], tuple[int, int, int]]:
    """Each contour edge (start, end) and its colour; an edge in two groups keeps its first place in the
    drawing order and the later group's colour, as controlnet_aux's table does."""
    from mediapipe.tasks.python.vision import FaceLandmarksConnections

    table: dict[tuple[int, int], tuple[int, int, int]] = {}
    for group, colour in CONTOURS:
        for connection in getattr(FaceLandmarksConnections, group):
            table[(connection.start, connection.end)] = colour
    return table


def draw_faces(faces: Sequence[np.ndarray], width: int, height: int,
               edges: dict[tuple[int, int], tuple[int, int, int]]) -> np.ndarray:
    """The faces' contours and pupils on a black RGB canvas of the image's size."""
    import cv2

    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for face in faces:
        pixels = [_pixel(x, y, width, height) for x, y in face]
        for (start, end), colour in edges.items():
            if max(start, end) < len(pixels) and pixels[start] is not None and pixels[end] is not None:
                cv2.line(canvas, pixels[start], pixels[end], colour, LINE_THICKNESS)
        for index, colour in PUPILS.items():
            if index >= len(face) or not (0 <= face[index][0] < 1 and 0 <= face[index][1] < 1):
                continue
            x, y = int(width * face[index][0]), int(height * face[index][1])
            canvas[max(y - PUPIL_HALF_WIDTH, 0):y + PUPIL_HALF_WIDTH,
                   max(x - PUPIL_HALF_WIDTH, 0):x + PUPIL_HALF_WIDTH] = colour
    return canvas


def annotate(task_path: Path, rgb: np.ndarray, *, max_faces: int, min_confidence: float) -> tuple[np.ndarray, int]:
    """The drawing of the image's faces, and how many faces it shows."""
    height, width = rgb.shape[:2]
    faces = [face for face in detect_faces(task_path, rgb, max_faces=max_faces, min_confidence=min_confidence)
             if large_enough(face, width, height)]
    return draw_faces(faces, width, height, contour_colours()), len(faces)

