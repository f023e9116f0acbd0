"""Face tools: ``face_off`` (crop one face with its mask), ``face_mask_detection`` (mask faces) and
``face_identifier`` (write each face's id on it).

Type strings, versions, fields, defaults, categories and outputs follow InvokeAI's ``facetools.py`` (6.11
fields; the "segmentation" category of current releases). Faces come from mediapipe's face landmarker bundle
``face_landmarker.task`` at ``<model root>/core/mediapipe``, as for ``mediapipe_face_detection`` (see
:mod:`invokeai_provider.models.annotators.mediapipe_face` for why InvokeAI's legacy FaceMesh cannot run here);
the masks, crops, chunks and ids are :mod:`invokeai_provider.models.annotators.faces`. The id labels use
InvokeAI's font, Inter Regular, when ``<model root>/core/fonts/inter/Inter-Regular.ttf`` is there, else
Pillow's built-in font at the same size. mediapipe runs on the CPU, so these nodes stay on default workers.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Optional

from pydantic import field_validator

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    InputField,
    OutputField,
    WithBoard,
    WithMetadata,
    invocation,
    invocation_output,
)
from invokeai_provider.models.model_manager.core_models import CORE_DIR, core_model_folder
from invokeai_provider.operators.controlnet.mediapipe_face import MEDIAPIPE_FOLDER
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import fail, load_image, save_image

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    from PIL.Image import Image

    from invokeai_provider.core.context import InvocationContext
    from invokeai_provider.models.annotators.faces import Face

_CATEGORY = "segmentation"
_VERSION = "1.2.2"
FONT_FILE = f"{CORE_DIR}/fonts/inter/Inter-Regular.ttf"
MAX_FACES = 999  # InvokeAI's FaceMesh limit: in effect every face

_CONFIDENCE = "Minimum face detection confidence, 0 to 1 (lower it when faces are missed)"
_CHUNK = ("Skip the whole-image search and look for faces in square chunks of the image (chunks are searched "
          "anyway when the whole image shows no face)")


@invocation_output("face_mask_output")
class FaceMaskOutput(ImageOutput):
    """The image and its face mask."""

    mask: ImageField = OutputField(description="The face mask (faces black)")


@invocation_output("face_off_output")
class FaceOffOutput(ImageOutput):
    """The face's crop, its mask, and where the crop sits in the image."""

    mask: ImageField = OutputField(description="The face mask of the crop (face black)")
    x: int = OutputField(description="The left edge of the crop in the image")
    y: int = OutputField(description="The top edge of the crop in the image")


def _find_faces(node: BaseInvocation, context: "InvocationContext", image: "Image", *, confidence: float,
                chunk: bool, x_offset: float = 0.0, y_offset: float = 0.0, draw_mask: bool = True) -> list["Face"]:
    """The image's faces, numbered as InvokeAI numbers them; a bad confidence or a missing or broken landmarker
    file is an error naming the node and field."""
    from invokeai_provider.models.annotators import faces as ft
    from invokeai_provider.models.annotators import mediapipe_face as mpf

    if not 0 <= confidence <= 1:
        raise fail(node, "minimum_confidence", f"expected a confidence from 0 to 1, got {confidence}")
    path = _task_file(node, context)

    def detect(rgb: "np.ndarray") -> list["np.ndarray"]:
        try:
            return mpf.detect_faces(path, rgb, max_faces=MAX_FACES, min_confidence=confidence)
        except mpf.FaceModelError as exc:
            raise fail(node, "image", str(exc)) from None

    return ft.find_faces(detect, image, context.logger, chunk=chunk, x_offset=x_offset, y_offset=y_offset,
                         draw_mask=draw_mask)


def _task_file(node: BaseInvocation, context: "InvocationContext") -> "Path":
    from invokeai_provider.models.annotators import mediapipe_face as mpf

    if importlib.util.find_spec("mediapipe") is None:
        raise fail(node, "image", "the face tools run mediapipe's face landmarker, and mediapipe is not "
                                  "installed (pip install 'mediapipe>=0.10.30,<0.10.32')")
    _, folder = core_model_folder(node, context, "image", MEDIAPIPE_FOLDER, required=(mpf.TASK_FILE,),
                                  what=f"mediapipe's face landmarker bundle {mpf.TASK_FILE} ({mpf.TASK_SOURCE})")
    return folder / mpf.TASK_FILE


@invocation("face_off", title="FaceOff", tags=["image", "faceoff", "face", "mask"], category=_CATEGORY,
            version=_VERSION)
class FaceOffInvocation(BaseInvocation, WithMetadata):
    """One face cut out of the image as a square crop, with its mask and the crop's position; the image
    itself and a white mask when there is no such face."""

    image: ImageField = InputField(description="The image to find faces in")
    face_id: int = InputField(default=0, ge=0, description="The face to crop, counted from 0 left to right (one "
                                                           "face; the FaceIdentifier node shows the ids)")
    minimum_confidence: float = InputField(default=0.5, description=_CONFIDENCE)
    x_offset: float = InputField(default=0.0, description="Widens (or, below 0, narrows) the mask horizontally")
    y_offset: float = InputField(default=0.0, description="Heightens (or, below 0, shortens) the mask vertically")
    padding: int = InputField(default=0, description="Pixels added to the crop's side around the face")
    chunk: bool = InputField(default=False, description=_CHUNK)

    def invoke(self, context: "InvocationContext") -> FaceOffOutput:
        from PIL import Image

        from invokeai_provider.models.annotators import faces as ft

        image = load_image(self, context, "image")
        faces = _find_faces(self, context, image, confidence=self.minimum_confidence, chunk=self.chunk,
                            x_offset=self.x_offset, y_offset=self.y_offset)
        crop: Optional[ft.Crop] = None
        if not faces:
            context.logger.warning("node %s: no face found; passing the image through", self.id)
        elif self.face_id >= len(faces):
            context.logger.warning("node %s: face_id %d, but %d face(s) found; passing the image through",
                                   self.id, self.face_id, len(faces))
        else:
            crop = ft.extract_face(image, faces[self.face_id], self.padding, context.logger)
        result = image if crop is None else crop.image.convert("RGBA")
        mask = Image.new("L", image.size, 255) if crop is None else crop.mask
        out = save_image(self, context, result)
        mask_out = save_image(self, context, mask, category="mask")
        return FaceOffOutput(image=out.image, width=out.width, height=out.height, mask=mask_out.image,
                             x=0 if crop is None else crop.x_min, y=0 if crop is None else crop.y_min)


@invocation("face_mask_detection", title="FaceMask", tags=["image", "face", "mask"], category=_CATEGORY,
            version=_VERSION)
class FaceMaskInvocation(BaseInvocation, WithMetadata):
    """A mask of the image's faces (black on white), with the image."""

    image: ImageField = InputField(description="The image to find faces in")
    face_ids: str = InputField(default="", description="The faces to mask, as comma-separated ids counted from 0 "
                                                       "left to right (\"0,2\"); empty masks every face")
    minimum_confidence: float = InputField(default=0.5, description=_CONFIDENCE)
    x_offset: float = InputField(default=0.0, description="Widens (or, below 0, narrows) each face's mask")
    y_offset: float = InputField(default=0.0, description="Heightens (or, below 0, shortens) each face's mask")
    chunk: bool = InputField(default=False, description=_CHUNK)
    invert_mask: bool = InputField(default=False, description="Invert the mask (faces white)")

    @field_validator("face_ids")
    @classmethod
    def _comma_separated_ids(cls, value: str) -> str:
        from invokeai_provider.models.annotators.faces import parse_face_ids

        parse_face_ids(value)
        return value

    def invoke(self, context: "InvocationContext") -> FaceMaskOutput:
        from PIL import Image, ImageOps

        from invokeai_provider.models.annotators import faces as ft

        requested = ft.parse_face_ids(self.face_ids)
        image = load_image(self, context, "image")
        faces = _find_faces(self, context, image, confidence=self.minimum_confidence, chunk=self.chunk,
                            x_offset=self.x_offset, y_offset=self.y_offset)
        ids = list(range(len(faces))) if requested is None else sorted(set(requested) & set(range(len(faces))))
        if requested is not None and not ids:
            context.logger.warning("node %s: face_ids %r names none of the %d face(s) found; passing the image "
                                   "through", self.id, self.face_ids, len(faces))
            result, mask = image, Image.new("L", image.size, 255)
        else:
            mask = ft.faces_mask(image, faces, ids, context.logger)
            result = image.convert("RGBA")
            if self.invert_mask:
                mask = ImageOps.invert(mask)
        out = save_image(self, context, result)
        mask_out = save_image(self, context, mask, category="mask")
        return FaceMaskOutput(image=out.image, width=out.width, height=out.height, mask=mask_out.image)


@invocation("face_identifier", title="FaceIdentifier", tags=["image", "face", "identifier"], category=_CATEGORY,
            version=_VERSION)
class FaceIdentifierInvocation(BaseInvocation, WithMetadata, WithBoard):
    """The image with each face's id (the face_id / face_ids of the other face tools) written on it."""

    image: ImageField = InputField(description="The image to find faces in")
    minimum_confidence: float = InputField(default=0.5, description=_CONFIDENCE)
    chunk: bool = InputField(default=False, description=_CHUNK)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from invokeai_provider.models.annotators import faces as ft
        from invokeai_provider.models.model_manager.core_models import core_model_root

        image = load_image(self, context, "image")
        faces = _find_faces(self, context, image, confidence=self.minimum_confidence, chunk=self.chunk,
                            draw_mask=False)
        font_file = core_model_root(self, context, "image")[1] / FONT_FILE
        font = ft.load_font(str(font_file) if font_file.is_file() else None)
        return save_image(self, context, ft.label_faces(image, faces, font))
