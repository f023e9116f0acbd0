"""Face masks, crops and id labels from face meshes: the pipeline behind InvokeAI's face tools
(``face_off``, ``face_mask_detection``, ``face_identifier``).

InvokeAI runs mediapipe's legacy FaceMesh (468 points, no iris refinement); here the landmarks come from
:func:`invokeai_provider.models.annotators.mediapipe_face.detect_faces` (the Tasks landmarker, whose 478-point
mesh starts with the same 468 points), and only those first 468 are used, so the centres, spans and masks are
computed from the same points. Everything else follows InvokeAI's face tools step by step:

- a face's mask is white with the convex hull of its landmarks black, the landmarks first pushed away from
  their mean by ``0.2 * offset`` of their distance to it (``x_offset``/``y_offset``);
- a non-square image can be searched in square chunks (the short side's size) slid along the long side, when
  asked or when the whole image shows no face; a chunk's mask reaches from the image origin to the chunk's far
  edge, and faces found twice (a centre inside an earlier face's ellipse) are merged;
- faces are numbered from 0 left to right (by mesh centre; top to bottom where centres share an x);
- a face is cropped as a square of its larger mesh span + 128 + padding pixels (at least 128, at most the mask's
  shorter side, rounded up to a multiple of 8 above 128) around its centre, shifted inside the mask, and its
  mask crop is blurred (Gaussian, radius 2).

Images are PIL images; numpy, OpenCV and PIL are imported inside the functions that use them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Sequence

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image
    from PIL.ImageFont import FreeTypeFont, ImageFont

MESH_POINTS = 468  # the legacy FaceMesh's points; the Tasks mesh adds 10 iris points after them
OFFSET_SCALE = 0.2  # how far a mask offset of 1 pushes each landmark from the face's centre
CROP_MARGIN = 128  # pixels added to a face's span for its crop, and the smallest crop
BLUR_RADIUS = 2
FONT_SIZE = 32
FONT_STROKE_WIDTH = 4
FACE_IDS = re.compile(r"(\d+(,\d+)*)?")  # "" (every face) or comma-separated ids

# A face detector: an (H, W, 3) uint8 RGB array in, each face's landmarks (points, 2) in [0, 1] of it out.
Detector = Callable[["np.ndarray"], Sequence["np.ndarray"]]


class Logger(Protocol):
    def info(self, msg: str, *args: object) -> None: ...

    def warning(self, msg: str, *args: object) -> None: ...


@dataclass
class Face:
    """One face as the face tools keep it: centre and mesh span in image pixels, and its mask (L, face black,
    from the image origin to the far edge of the chunk it was found in; None when no mask was asked for)."""

    x_center: float
    y_center: float
    mesh_width: int
    mesh_height: int
    mask: Optional["Image"]
    face_id: int = -1


@dataclass(frozen=True)
class Crop:
    """A face's square crop box (x_max/y_max exclusive), with the image and the blurred mask cut to it."""

    x_min: int
    y_min: int
    x_max: int
    y_max: int
    image: "Image"
    mask: "Image"


def parse_face_ids(text: str) -> Optional[list[int]]:
    """The ids a ``face_ids`` string names, or None for "" (every face); ValueError if it is not a
    comma-separated list of non-negative integers."""
    if FACE_IDS.fullmatch(text) is None:
        raise ValueError(f'Face IDs must be a comma-separated list of integers (e.g. "1,2,3"), got {text!r}')
    return [int(part) for part in text.split(",")] if text else None


def face_from_landmarks(points: "np.ndarray", width: int, height: int, *, x_offset: float = 0.0,
                        y_offset: float = 0.0, origin: tuple[int, int] = (0, 0), draw_mask: bool = True) -> Face:
    """A face from its landmarks in [0, 1] of a ``width`` x ``height`` image (or chunk) whose top-left corner is
    at ``origin`` in the whole image."""
    import numpy as np

    points = np.asarray(points, dtype=np.float64)[:MESH_POINTS]
    span = points.max(axis=0) - points.min(axis=0)
    xs, ys = points[:, 0] * width, points[:, 1] * height
    x_center, y_center = float(np.mean(xs)), float(np.mean(ys))
    mask = None
    if draw_mask:
        import cv2
        from PIL import Image

        pushed = np.column_stack((xs + OFFSET_SCALE * x_offset * (xs - x_center),
                                  ys + OFFSET_SCALE * y_offset * (ys - y_center))).astype(np.int32)
        canvas = np.full((height + origin[1], width + origin[0]), 255, dtype=np.uint8)
        chunk = np.full((height, width), 255, dtype=np.uint8)
        cv2.fillConvexPoly(chunk, cv2.convexHull(pushed), 0)
        canvas[origin[1]:, origin[0]:] = chunk
        mask = Image.fromarray(canvas, mode="L")
    return Face(x_center=x_center + origin[0], y_center=y_center + origin[1], mesh_width=int(span[0] * width),
                mesh_height=int(span[1] * height), mask=mask)


def chunk_origins(width: int, height: int) -> list[tuple[int, int]]:
    """Top-left corners of the square chunks (side: the shorter side) slid along a non-square image's longer
    side, about half a chunk apart, first and last flush with the ends; none for a square image."""
    if width == height:
        return []
    long_side, short_side = max(width, height), min(width, height)
    steps = int(long_side * 2 / short_side) + 1
    increment = (long_side - short_side) / (steps - 1)
    starts, at = [], 0.0
    while at <= long_side - short_side:  # float steps, so the last one can fall just short of the end
        starts.append(int(at))
        at += increment
    return [(start, 0) if width > height else (0, start) for start in starts]


def _merge(kept: Face, found: Face) -> Face:
    """Two detections of one face as one: the larger centre and spans, and both masks' black."""
    mask = kept.mask
    if kept.mask is not None and found.mask is not None:
        from PIL import Image, ImageChops

        size = (max(kept.mask.width, found.mask.width), max(kept.mask.height, found.mask.height))
        layers = []
        for part in (kept.mask, found.mask):
            layer = Image.new("L", size, 255)
            layer.paste(part, (0, 0))
            layers.append(layer)
        mask = ImageChops.darker(*layers)
    return Face(x_center=max(kept.x_center, found.x_center), y_center=max(kept.y_center, found.y_center),
                mesh_width=max(kept.mesh_width, found.mesh_width),
                mesh_height=max(kept.mesh_height, found.mesh_height), mask=mask)


def _inside(face: Face, x: float, y: float) -> bool:
    """Whether (x, y) lies strictly inside the ellipse of the face's mesh spans around its centre."""
    rx, ry = face.mesh_width / 2, face.mesh_height / 2
    if rx == 0 or ry == 0:
        return False
    return (x - face.x_center) ** 2 / rx ** 2 + (y - face.y_center) ** 2 / ry ** 2 < 1


def number_faces(found: Sequence[Face]) -> list[Face]:
    """The faces with repeats merged (a centre inside an earlier face's ellipse joins that face), ordered by
    centre x then y, and numbered from 0 in that order."""
    kept: list[Face] = []
    for face in found:
        for index, other in enumerate(kept):
            if _inside(other, face.x_center, face.y_center):
                kept[index] = _merge(other, face)
                break
        else:
            kept.append(face)
    ordered = sorted(kept, key=lambda face: (face.x_center, face.y_center))
    for face_id, face in enumerate(ordered):
        face.face_id = face_id
    return ordered


def _rgb(image: "Image") -> "np.ndarray":
    import numpy as np

    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def find_faces(detect: Detector, image: "Image", log: Logger, *, chunk: bool = False, x_offset: float = 0.0,
               y_offset: float = 0.0, draw_mask: bool = True) -> list[Face]:
    """The image's faces, numbered: the whole image is searched unless ``chunk``; the chunks are searched when
    ``chunk`` or when the whole image shows no face."""
    found: list[Face] = []

    def search(part: "Image", origin: tuple[int, int]) -> list[Face]:
        return [face_from_landmarks(points, part.width, part.height, x_offset=x_offset, y_offset=y_offset,
                                    origin=origin, draw_mask=draw_mask) for points in detect(_rgb(part))]

    if not chunk:
        log.info("face tools: looking for faces in the whole image")
        found = search(image, (0, 0))
    if chunk or not found:
        side = min(image.size)
        origins = chunk_origins(*image.size)
        log.info("face tools: looking for faces in %d square chunk(s) of %d pixels%s", len(origins), side,
                 "" if chunk else " (none in the whole image)")
        found = []
        for x, y in origins:
            found += search(image.crop((x, y, x + side, y + side)), (x, y))
        if not found:
            log.warning("face tools: no face found in the image's chunks either")
    return number_faces(found)


def crop_box(face: Face, padding: int, log: Logger) -> tuple[int, int, int, int]:
    """The square (x_min, y_min, x_max, y_max) cropped around a face, kept inside its mask where it fits."""
    assert face.mask is not None
    width, height = face.mask.size
    side = min(max(face.mesh_width + CROP_MARGIN + padding, face.mesh_height + CROP_MARGIN + padding, CROP_MARGIN),
               min(width, height))
    if side > CROP_MARGIN:
        side = (side + 7) // 8 * 8
    x_min, y_min = int(face.x_center - side / 2), int(face.y_center - side / 2)
    x_max, y_max = int(face.x_center + side / 2), int(face.y_center + side / 2)
    if x_min < 0:
        x_min, x_max = 0, x_max - x_min
        log.warning("face tools: the crop reached the image's left edge")
    elif x_max > width:
        x_min, x_max = x_min - (x_max - width), width
        log.warning("face tools: the crop reached the image's right edge")
    if y_min < 0:
        y_min, y_max = 0, y_max - y_min
        log.warning("face tools: the crop reached the image's top edge")
    elif y_max > height:
        y_min, y_max = y_min - (y_max - height), height
        log.warning("face tools: the crop reached the image's bottom edge")
    if x_max - x_min != side:  # the truncated ends can be a pixel off: spread the difference
        short = side - (x_max - x_min)
        x_min, x_max = x_min - short // 2, x_max + short - short // 2
    if y_max - y_min != side:
        short = side - (y_max - y_min)
        y_min, y_max = y_min - short // 2, y_max + short - short // 2
    log.info("face tools: crop box of %d pixels", side)
    return x_min, y_min, x_max, y_max


def extract_face(image: "Image", face: Face, padding: int, log: Logger) -> Crop:
    """The face's square crop of the image and of its mask (blurred); parts outside the image are black."""
    from PIL import ImageFilter

    assert face.mask is not None
    box = crop_box(face, padding, log)
    mask = face.mask.crop(box).filter(ImageFilter.GaussianBlur(radius=BLUR_RADIUS))
    return Crop(*box, image=image.crop(box), mask=mask)


def faces_mask(image: "Image", faces: Sequence[Face], ids: Sequence[int], log: Logger) -> "Image":
    """A white L mask the image's size with the chosen faces' blurred crops' black pasted in."""
    from PIL import Image, ImageOps

    mask = Image.new("L", image.size, 255)
    for face_id in ids:
        crop = extract_face(image, faces[face_id], 0, log)
        black = Image.new("L", (crop.x_max - crop.x_min, crop.y_max - crop.y_min), 0)
        mask.paste(black, (crop.x_min, crop.y_min), ImageOps.invert(crop.mask))
    return mask


def load_font(path: Optional[str]) -> "FreeTypeFont | ImageFont":
    """The id font at FONT_SIZE: the TrueType file at ``path`` (InvokeAI's Inter Regular), else Pillow's own."""
    from PIL import ImageFont

    return ImageFont.truetype(path, FONT_SIZE) if path else ImageFont.load_default(size=FONT_SIZE)


def label_faces(image: "Image", faces: Sequence[Face], font: "FreeTypeFont | ImageFont") -> "Image":
    """An RGBA copy of the image with each face's id written on its centre, white with a black outline."""
    from PIL import ImageDraw

    labelled = image.copy() if image.mode in ("RGB", "RGBA") else image.convert("RGBA")
    draw = ImageDraw.Draw(labelled)
    for face in faces:
        text = str(face.face_id)
        _, _, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=FONT_STROKE_WIDTH)
        draw.text((face.x_center - right / 2, face.y_center - bottom / 2), text, fill=(255, 255, 255, 255),
                  font=font, stroke_width=FONT_STROKE_WIDTH, stroke_fill=(0, 0, 0, 255))
    return labelled.convert("RGBA")

