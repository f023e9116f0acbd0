"""Face tools (face_off, face_mask_detection, face_identifier): declarations as InvokeAI's; the masks, crops,
chunks and ids from known landmarks.

Most node tests replace mediapipe's landmarker (``mediapipe_face.detect_faces``) with a stand-in that reports a
ring of 468 landmarks on each pure-red disc of the image it is given (a disc touching the image's edge, or
smaller than 4% of its longer side, is not seen), so faces sit at known places, and chunked searches see
what a crop of the image shows. The last tests run mediapipe's own FaceLandmarker on the tiny
``face_landmarker.task`` that tests/operators/controlnet/test_mediapipe_face_nodes.py builds (skipped without
flatbuffers); no test needs the real landmarker file.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
from pathlib import Path

import pytest

from helpers import only_output, put_image, stored_image

from invokeai_provider.core.registry import InvocationRegistry
from invokeai_provider.errors import NodeExecutionError, NodeValidationError

np = pytest.importorskip("numpy")
pytest.importorskip("cv2")

from invokeai_provider.models.annotators import faces as ft  # noqa: E402

LOG = logging.getLogger("test_face_nodes")
TASK_FOLDER = "core/mediapipe"
RED = (255, 0, 0)


# --- landmarks and images ----------------------------------------------------------------------------------


def ring(cx: float, cy: float, rx: float, ry: float | None = None, points: int = ft.MESH_POINTS) -> "np.ndarray":
    """``points`` landmarks on an ellipse (pixels)."""
    ry = rx if ry is None else ry
    angles = np.arange(points) * 2 * math.pi / points
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)


def picture(width: int, height: int, *discs: tuple[int, int, int]) -> "np.ndarray":
    """A grey image with pure-red discs (centre x, y, radius)."""
    import cv2

    image = np.full((height, width, 3), 90, np.uint8)
    for x, y, r in discs:
        cv2.circle(image, (x, y), r, RED, -1)
    return image


def red_discs(rgb: "np.ndarray") -> list[tuple[float, float, float]]:
    """The fully visible, large enough red discs of an image: centre and radius in pixels."""
    import cv2

    height, width = rgb.shape[:2]
    red = ((rgb[..., 0] == 255) & (rgb[..., 1] == 0) & (rgb[..., 2] == 0)).astype(np.uint8)
    count, _, stats, centroids = cv2.connectedComponentsWithStats(red)
    found = []
    for label in range(1, count):
        x, y, w, h, _ = stats[label]
        if x == 0 or y == 0 or x + w == width or y + h == height or w / 2 < 0.04 * max(width, height):
            continue
        found.append((float(centroids[label][0]), float(centroids[label][1]), w / 2))
    return found


class FakeLandmarker:
    """Stands in for ``detect_faces``: a ring of landmarks on each red disc; records what it was asked."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []
        self.calls: list[dict] = []

    def __call__(self, task_path, rgb, *, max_faces, min_confidence):  # noqa: ANN001 - detect_faces' signature
        height, width = rgb.shape[:2]
        self.sizes.append((width, height))
        self.calls.append({"task_path": Path(task_path), "max_faces": max_faces, "min_confidence": min_confidence})
        return [ring(x, y, r) / (width, height) for x, y, r in red_discs(rgb)]


@pytest.fixture
def models_run(tmp_path, run):
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    run.services["models"] = ModelManager(ModelRegistry(str(tmp_path / "models")), device="cpu")
    return run


def install_task(run, data: bytes = b"stand-in") -> Path:
    folder = run.services["models"].registry.root / TASK_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "face_landmarker.task").write_bytes(data)
    return folder / "face_landmarker.task"


@pytest.fixture
def landmarker(models_run, monkeypatch) -> FakeLandmarker:
    pytest.importorskip("mediapipe")  # the nodes check that it is installed before looking for faces
    from invokeai_provider.models.annotators import mediapipe_face

    fake = FakeLandmarker()
    install_task(models_run)
    monkeypatch.setattr(mediapipe_face, "detect_faces", fake)
    return fake


def run_node(run, node_type: str, image, **fields):
    out = only_output(run, {"type": node_type, "image": put_image(run, "in.png", image), **fields})
    return out, stored_image(run, out)


def mask_of(run, out) -> "np.ndarray":
    mask = stored_image(run, out.mask)
    assert mask.mode == "L"
    return np.asarray(mask)


# --- declarations ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("node_type,title,tags,output,fields", [
    ("face_off", "FaceOff", ["image", "faceoff", "face", "mask"], "face_off_output",
     {"metadata": None, "image": None, "face_id": 0, "minimum_confidence": 0.5, "x_offset": 0.0, "y_offset": 0.0,
      "padding": 0, "chunk": False}),
    ("face_mask_detection", "FaceMask", ["image", "face", "mask"], "face_mask_output",
     {"metadata": None, "image": None, "face_ids": "", "minimum_confidence": 0.5, "x_offset": 0.0,
      "y_offset": 0.0, "chunk": False, "invert_mask": False}),
    ("face_identifier", "FaceIdentifier", ["image", "face", "identifier"], "image_output",
     {"board": None, "metadata": None, "image": None, "minimum_confidence": 0.5, "chunk": False}),
])
def test_declarations_match_invokeai(node_type, title, tags, output, fields):
    cls = InvocationRegistry.get_invocation_class(node_type)
    ui = cls.UIConfig
    assert (ui.title, ui.version, ui.category, ui.tags) == (title, "1.2.2", "segmentation", tags)
    assert not ui.gpu  # mediapipe runs on the CPU
    assert cls.get_output_annotation().get_type() == output
    declared = cls.input_fields()
    assert list(declared) == list(fields)
    assert {name: declared[name].default for name in fields if name != "image"} == \
        {name: value for name, value in fields.items() if name != "image"}


def test_outputs_match_invokeai():
    off = InvocationRegistry.get_invocation_class("face_off").get_output_annotation()
    mask = InvocationRegistry.get_invocation_class("face_mask_detection").get_output_annotation()
    assert {"image", "width", "height", "mask", "x", "y"} <= set(off.model_fields)
    assert {"image", "width", "height", "mask"} <= set(mask.model_fields) and "x" not in mask.model_fields


def test_face_id_must_not_be_negative(run):
    with pytest.raises(NodeValidationError, match=r"face_off.*face_id"):
        only_output(run, {"type": "face_off", "image": {"image_name": "x.png"}, "face_id": -1})


@pytest.mark.parametrize("face_ids", ["a", "1, 2", "1;2", "-1", "1,", ",1", "1,,2"])
def test_bad_face_ids_are_refused_naming_node_and_field(run, face_ids):
    with pytest.raises(NodeValidationError, match=r"face_mask_detection.*face_ids.*comma-separated"):
        only_output(run, {"type": "face_mask_detection", "image": {"image_name": "x.png"}, "face_ids": face_ids})


def test_face_ids_parsing():
    assert ft.parse_face_ids("") is None
    assert ft.parse_face_ids("0,2,7") == [0, 2, 7]
    assert ft.parse_face_ids("3") == [3]
    with pytest.raises(ValueError):
        ft.parse_face_ids("0,x")


# --- masks and crops from landmarks ------------------------------------------------------------------------


def test_a_face_mask_is_the_landmarks_hull_where_the_face_is():
    face = ft.face_from_landmarks(ring(70, 50, 20) / (200, 100), 200, 100)
    mask = np.asarray(face.mask)
    assert face.mask.size == (200, 100) and set(np.unique(mask)) == {0, 255}
    assert mask[50, 70] == 0 and mask[50, 55] == 0 and mask[50, 95] == 255 and mask[10, 70] == 255
    black = mask == 0
    assert abs(black.sum() - math.pi * 20 ** 2) < 0.1 * math.pi * 20 ** 2
    ys, xs = np.nonzero(black)
    assert abs(xs.mean() - 70) < 1 and abs(ys.mean() - 50) < 1
    assert (face.x_center, face.y_center) == pytest.approx((70, 50))
    assert (face.mesh_width, face.mesh_height) == (39, 39) or (face.mesh_width, face.mesh_height) == (40, 40)


def test_only_the_legacy_mesh_points_count():
    # the Tasks mesh's 10 iris points (468..477) are not part of InvokeAI's FaceMesh: they move nothing
    points = np.concatenate([ring(70, 50, 20), np.full((10, 2), (190.0, 95.0))]) / (200, 100)
    face = ft.face_from_landmarks(points, 200, 100)
    assert face.x_center == pytest.approx(70) and face.mesh_width <= 40
    assert np.asarray(face.mask)[95, 190] == 255


def test_offsets_stretch_the_mask_from_the_face_centre():
    points = ring(100, 100, 20) / 200
    plain = np.asarray(ft.face_from_landmarks(points, 200, 200).mask) == 0
    wide = np.asarray(ft.face_from_landmarks(points, 200, 200, x_offset=5).mask) == 0
    tall = np.asarray(ft.face_from_landmarks(points, 200, 200, y_offset=5).mask) == 0
    narrow = np.asarray(ft.face_from_landmarks(points, 200, 200, x_offset=-2.5).mask) == 0

    def extent(black, axis):
        lines = np.nonzero(black.any(axis=axis))[0]
        return lines.max() - lines.min() + 1

    # each point moves 0.2 * offset of its distance from the centre: 5 doubles, -2.5 halves
    assert extent(wide, 0) == pytest.approx(2 * extent(plain, 0), abs=2) and extent(wide, 1) == extent(plain, 1)
    assert extent(tall, 1) == pytest.approx(2 * extent(plain, 1), abs=2) and extent(tall, 0) == extent(plain, 0)
    assert extent(narrow, 0) == pytest.approx(extent(plain, 0) / 2, abs=2)
    assert (plain <= wide).all()  # grown, not moved


def test_a_chunk_face_mask_reaches_from_the_origin_to_the_chunk_end():
    face = ft.face_from_landmarks(ring(30, 40, 10) / 80, 80, 80, origin=(120, 0))
    assert face.mask.size == (200, 80)
    mask = np.asarray(face.mask)
    assert mask[40, 150] == 0 and mask[40, 30] == 255 and (face.x_center, face.y_center) == pytest.approx((150, 40))


def test_chunks_are_squares_slid_along_the_long_side():
    assert ft.chunk_origins(300, 300) == []
    origins = ft.chunk_origins(1000, 400)  # int(2 * 1000 / 400) + 1 = 6 squares of 400, 120 apart
    assert origins == [(0, 0), (120, 0), (240, 0), (360, 0), (480, 0), (600, 0)]
    assert ft.chunk_origins(400, 1000) == [(y, x) for x, y in origins]
    # InvokeAI steps with floats: for 150 x 50 the 7th step falls short of the end and is dropped
    assert [x for x, _ in ft.chunk_origins(150, 50)] == [0, 16, 33, 50, 66, 83]


def face_at(x, y, size=40, image=(400, 300)):
    return ft.face_from_landmarks(ring(x, y, size / 2) / image, *image)


def test_faces_are_numbered_left_to_right_and_repeats_merge():
    left, right, middle = face_at(80, 200), face_at(300, 60), face_at(180, 120)
    again = face_at(305, 62)  # inside the right face's ellipse: the same face, seen twice
    numbered = ft.number_faces([right, left, middle, again])
    assert [(round(f.x_center), f.face_id) for f in numbered] == [(80, 0), (180, 1), (305, 2)]
    merged = np.asarray(numbered[2].mask) == 0
    assert merged[60, 281] and merged[62, 324]  # both detections' black
    # the same x: top first
    assert [round(f.y_center) for f in ft.number_faces([face_at(100, 250), face_at(100, 50)])] == [50, 250]


def test_the_crop_is_a_square_around_the_face():
    face = face_at(200, 150, size=60)  # mesh span 59-60 px: side 60 + 128 -> 188 -> 192 (multiple of 8)
    side = (max(face.mesh_width, face.mesh_height) + 128 + 7) // 8 * 8
    assert ft.crop_box(face, 0, LOG) == (int(200 - side / 2), int(150 - side / 2), int(200 + side / 2),
                                         int(150 + side / 2))
    x0, y0, x1, y1 = ft.crop_box(face, 40, LOG)
    assert x1 - x0 == y1 - y0 == (max(face.mesh_width, face.mesh_height) + 168 + 7) // 8 * 8
    # at most the image's shorter side...
    tall = ft.face_from_landmarks(ring(200, 150, 30) / (400, 296), 400, 296)
    assert ft.crop_box(tall, 1000, LOG) == (52, 0, 348, 296)
    # ...rounded up to a multiple of 8 as InvokeAI rounds it, even past the image's edge (300 -> 304)
    assert ft.crop_box(face, 1000, LOG) == (48, 0, 352, 304)


def test_a_crop_at_an_edge_is_shifted_inside(caplog):
    face = face_at(30, 280, size=40)
    with caplog.at_level(logging.WARNING):
        x0, y0, x1, y1 = ft.crop_box(face, 0, LOG)
    side = (max(face.mesh_width, face.mesh_height) + 128 + 7) // 8 * 8
    assert (x0, y1, x1 - x0, y1 - y0) == (0, 300, side, side)
    assert "left edge" in caplog.text and "bottom edge" in caplog.text


def test_the_faces_mask_holds_the_chosen_faces_blurred():
    image_size = (400, 300)
    from PIL import Image

    image = Image.new("RGB", image_size)
    faces = ft.number_faces([face_at(100, 150), face_at(300, 150)])
    both = np.asarray(ft.faces_mask(image, faces, [0, 1], LOG))
    first = np.asarray(ft.faces_mask(image, faces, [0], LOG))
    assert both.shape == (300, 400) and both[150, 100] == 0 and both[150, 300] == 0 and both[20, 200] == 255
    assert first[150, 100] == 0 and first[150, 300] == 255
    edge = first[150, 75:125]
    assert 0 < edge.min() + 1 and len(set(edge.tolist())) > 2  # blurred: grey steps at the hull's edge


# --- the nodes, with landmarks from red discs --------------------------------------------------------------


def test_face_mask_is_black_where_the_face_is(models_run, landmarker):
    out, image = run_node(models_run, "face_mask_detection", picture(320, 240, (100, 120, 30)))
    mask = mask_of(models_run, out)
    assert image.mode == "RGBA" and image.size == (320, 240) and (out.width, out.height) == (320, 240)
    assert mask.shape == (240, 320)
    assert mask[120, 100] == 0 and mask[120, 80] == 0 and mask[20, 300] == 255 and mask[120, 160] == 255
    black = mask < 128
    assert abs(black.sum() - math.pi * 30 ** 2) < 0.1 * math.pi * 30 ** 2
    call = landmarker.calls[0]
    assert call["max_faces"] >= 100 and call["min_confidence"] == 0.5
    assert call["task_path"] == models_run.services["models"].registry.root / TASK_FOLDER / "face_landmarker.task"


def test_invert_mask_flips_the_mask(models_run, landmarker):
    image = picture(320, 240, (100, 120, 30))
    plain = mask_of(models_run, run_node(models_run, "face_mask_detection", image)[0])
    inverted = mask_of(models_run, run_node(models_run, "face_mask_detection", image, invert_mask=True)[0])
    assert (inverted == 255 - plain).all() and inverted[120, 100] == 255


def test_mask_offsets_grow_the_mask(models_run, landmarker):
    image = picture(320, 240, (160, 120, 25))
    plain = mask_of(models_run, run_node(models_run, "face_mask_detection", image)[0]) < 128
    wide = mask_of(models_run, run_node(models_run, "face_mask_detection", image, x_offset=2.0)[0]) < 128
    assert wide.sum() > 1.3 * plain.sum() and (plain <= wide).all()
    assert wide[120, 160 + 30] and not plain[120, 160 + 30] and not wide[120 - 30, 160]


def test_face_ids_choose_the_faces_masked(models_run, landmarker):
    image = picture(400, 200, (300, 100, 30), (90, 100, 30))
    masks = {ids: mask_of(models_run, run_node(models_run, "face_mask_detection", image, face_ids=ids)[0])
             for ids in ("", "0", "1", "1,0", "0,7")}
    left, right = (100, 90), (100, 300)
    assert masks[""][left] == 0 and masks[""][right] == 0
    assert masks["0"][left] == 0 and masks["0"][right] == 255  # 0 is the leftmost face
    assert masks["1"][left] == 255 and masks["1"][right] == 0
    assert (masks["1,0"] == masks[""]).all() and (masks["0,7"] == masks["0"]).all()  # 7 is not there: ignored


def test_face_ids_naming_no_face_pass_the_image_through(models_run, landmarker):
    source = picture(400, 200, (90, 100, 30))
    out, image = run_node(models_run, "face_mask_detection", source, face_ids="3,4")
    assert image.mode == "RGB" and (np.asarray(image) == source).all()
    assert (mask_of(models_run, out) == 255).all()


def test_no_face_gives_a_white_mask(models_run, landmarker):
    out, image = run_node(models_run, "face_mask_detection", picture(300, 300))
    assert (mask_of(models_run, out) == 255).all() and image.size == (300, 300)


def test_face_off_crops_the_face_with_its_mask(models_run, landmarker):
    source = picture(400, 300, (100, 120, 30), (300, 150, 30))
    out, crop = run_node(models_run, "face_off", source, face_id=1)
    face = ft.face_from_landmarks(ring(300, 150, 30) / (400, 300), 400, 300)
    side = (max(face.mesh_width, face.mesh_height) + 128 + 7) // 8 * 8
    assert (out.x, out.y) == (int(face.x_center - side / 2), int(face.y_center - side / 2))
    assert crop.mode == "RGBA" and crop.size == (side, side) and (out.width, out.height) == (side, side)
    assert (np.asarray(crop)[..., :3] == source[out.y:out.y + side, out.x:out.x + side]).all()
    mask = mask_of(models_run, out)
    assert mask.shape == (side, side)
    assert mask[150 - out.y, 300 - out.x] == 0 and mask[0, 0] == 255  # the face in the crop's middle, black


def test_face_off_padding_grows_the_crop(models_run, landmarker):
    source = picture(400, 300, (200, 150, 30))
    plain, _ = run_node(models_run, "face_off", source)
    padded, crop = run_node(models_run, "face_off", source, padding=64)
    assert padded.width == plain.width + 64 and crop.size == (padded.width, padded.width)
    assert padded.x == plain.x - 32 and padded.y == plain.y - 32


def test_face_off_at_an_edge_keeps_the_crop_in_the_image(models_run, landmarker):
    out, crop = run_node(models_run, "face_off", picture(400, 300, (360, 40, 30)))
    assert out.x + crop.width == 400 and out.y == 0
    assert mask_of(models_run, out)[40, 360 - out.x] == 0


def test_face_off_without_the_face_passes_the_image_through(models_run, landmarker):
    source = picture(400, 300, (100, 120, 30))
    out, image = run_node(models_run, "face_off", source, face_id=1)
    assert (out.x, out.y) == (0, 0) and image.size == (400, 300) and (np.asarray(image) == source).all()
    assert (mask_of(models_run, out) == 255).all() and mask_of(models_run, out).shape == (300, 400)


def test_small_faces_in_a_wide_image_are_found_in_chunks(models_run, landmarker):
    # a 22 px face in a 1024 px wide image is too small for the whole-image search, not for a 256 px chunk
    source = picture(1024, 256, (700, 128, 22))
    out, _ = run_node(models_run, "face_mask_detection", source)
    assert landmarker.sizes == [(1024, 256)] + [(256, 256)] * 9  # whole image, then int(2 * 1024 / 256) + 1 chunks
    mask = mask_of(models_run, out)
    assert mask.shape == (256, 1024) and mask[128, 700] == 0 and mask[128, 660] == 255 and mask[128, 300] == 255
    off, crop = run_node(models_run, "face_off", source)
    assert off.x <= 700 - 22 and off.x + crop.width >= 700 + 22 and mask_of(models_run, off)[128 - off.y, 700 - off.x] == 0


def test_chunk_skips_the_whole_image_and_merges_a_face_seen_twice(models_run, landmarker):
    # chunks start every 96 px: the face (x 160-220) lies wholly inside the chunks at 0 and 96 (256 wide)
    source = picture(1024, 256, (190, 128, 30))
    out, _ = run_node(models_run, "face_mask_detection", source, chunk=True)
    assert landmarker.sizes == [(256, 256)] * 9
    assert mask_of(models_run, out)[128, 190] == 0
    _, labelled = run_node(models_run, "face_identifier", source, chunk=True)
    white = (np.asarray(labelled)[..., :3] == 255).all(axis=2)
    assert white[:, 150:230].any() and not white[:, 230:].any()  # one id, on the face


def test_a_square_image_without_faces_has_no_chunks(models_run, landmarker):
    run_node(models_run, "face_mask_detection", picture(256, 256))
    assert landmarker.sizes == [(256, 256)]


def expected_label(source: "np.ndarray", centres: list[tuple[float, float]]) -> "np.ndarray":
    """The ids 0, 1, ... written as InvokeAI writes them: centred on each face, white with a 4 px black stroke."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(source)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=32)
    for face_id, (x, y) in enumerate(centres):
        _, _, w, h = draw.textbbox((0, 0), str(face_id), font=font, stroke_width=4)
        draw.text((x - w / 2, y - h / 2), str(face_id), fill=(255, 255, 255), font=font, stroke_width=4,
                  stroke_fill=(0, 0, 0))
    return np.asarray(image)


def test_face_identifier_writes_each_id_on_its_face(models_run, landmarker):
    source = picture(400, 200, (300, 100, 40), (90, 100, 40))
    out, labelled = run_node(models_run, "face_identifier", source)
    assert labelled.mode == "RGBA" and labelled.size == (400, 200) and (out.width, out.height) == (400, 200)
    pixels = np.asarray(labelled)[..., :3]
    centres = [(x, y) for x, y, _ in sorted(red_discs(source))]
    assert (pixels == expected_label(source, centres)).all()
    assert not (pixels == expected_label(source, centres[::-1])).all()  # the ids are in this order
    assert (pixels[:, :40] == source[:, :40]).all() and not (pixels == source).all()


def test_face_identifier_uses_invokeais_font_when_it_is_there(models_run, landmarker):
    fonts = [Path(p) for p in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",) if Path(p).is_file()]
    if not fonts:
        pytest.skip("no TrueType font on this machine to stand in for Inter")
    source = picture(400, 200, (200, 100, 40))
    _, default = run_node(models_run, "face_identifier", source)
    folder = models_run.services["models"].registry.root / "core/fonts/inter"
    folder.mkdir(parents=True)
    (folder / "Inter-Regular.ttf").write_bytes(fonts[0].read_bytes())
    _, with_font = run_node(models_run, "face_identifier", source)
    assert not (np.asarray(default) == np.asarray(with_font)).all()


# --- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("node_type", ["face_off", "face_mask_detection", "face_identifier"])
def test_a_missing_landmarker_names_the_file_and_where_to_get_it(models_run, node_type):
    pytest.importorskip("mediapipe")
    with pytest.raises(NodeExecutionError) as info:
        run_node(models_run, node_type, picture(64, 64))
    text = str(info.value)
    assert node_type in text and "field image" in text and "core/mediapipe" in text
    assert "face_landmarker.task" in text and "storage.googleapis.com" in text


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_confidence_outside_0_to_1_is_refused(models_run, landmarker, value):
    with pytest.raises(NodeExecutionError, match=r"face_mask_detection.*field minimum_confidence: expected"):
        run_node(models_run, "face_mask_detection", picture(64, 64), minimum_confidence=value)
    assert not landmarker.calls


# --- mediapipe's own landmarker on a tiny task file --------------------------------------------------------


def tiny_models():
    """tests/operators/controlnet/test_mediapipe_face_nodes.py, which builds tiny face landmarker bundles."""
    pytest.importorskip("mediapipe")
    pytest.importorskip("flatbuffers")
    name = "test_mediapipe_face_nodes"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "controlnet" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_mediapipe_landmarks_give_the_mask_of_the_face_oval(models_run):
    tiny = tiny_models()
    install_task(models_run, tiny.task_bundle(tiny.detector(tiny.ONE_FACE), tiny.landmark_model(tiny.template())))
    out, _ = run_node(models_run, "face_mask_detection", np.random.RandomState(0).randint(0, 255, (256, 256, 3)))
    mask = mask_of(models_run, out)
    # the template's outline is a ring of radius 0.4 of the crop (0.75 of the image): radius 0.3 of 256 px
    points = tiny.in_image(tiny.template(), *tiny.ONE_FACE[:3])[:ft.MESH_POINTS] * 256
    cx, cy = points.mean(axis=0)
    assert mask[int(cy), int(cx)] == 0 and mask[int(cy), int(cx + 0.25 * 256)] < 128
    assert mask[int(cy), int(cx + 0.35 * 256)] == 255 and mask[5, 5] == 255
    assert abs((mask < 128).sum() - math.pi * (0.3 * 256) ** 2) < 0.05 * math.pi * (0.3 * 256) ** 2


def test_mediapipe_without_a_face_passes_face_off_through(models_run):
    tiny = tiny_models()
    install_task(models_run, tiny.task_bundle(tiny.detector(), tiny.landmark_model(tiny.template())))
    out, image = run_node(models_run, "face_off", np.full((96, 160, 3), 128, np.uint8))
    assert image.size == (160, 96) and (out.x, out.y) == (0, 0) and (mask_of(models_run, out) == 255).all()
