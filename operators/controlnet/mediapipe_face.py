"""MediaPipe face meshes (``mediapipe_face_detection``), the input of face ControlNets.

Type string, version, fields, defaults and outputs follow InvokeAI 6.11 (``mediapipe_face.py``); the
category is its "controlnet" like the other preprocessors. The model is mediapipe's face landmarker bundle
``face_landmarker.task`` at ``<model root>/core/mediapipe`` (InvokeAI uses the copies inside mediapipe
0.10.14; see :mod:`invokeai_provider.models.annotators.mediapipe_face` for why this cannot). mediapipe runs on the CPU,
so the node is not routed to GPU workers.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.models.model_manager.core_models import CORE_DIR, core_model_folder
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import fail, load_rgb, save_image

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

MEDIAPIPE_FOLDER = f"{CORE_DIR}/mediapipe"


@invocation("mediapipe_face_detection", title="MediaPipe Face Detection", tags=["controlnet", "face"],
            category="controlnet", version="1.0.0")
class MediaPipeFaceDetectionInvocation(BaseInvocation, WithMetadata, WithBoard):
    """The faces in the image as MediaPipe face-mesh contours on black, the size of the image."""

    image: ImageField = InputField(description="The image to process")
    max_faces: int = InputField(default=1, ge=1, description="Maximum number of faces to detect")
    min_confidence: float = InputField(default=0.5, ge=0, le=1, description="Minimum confidence for face detection")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from invokeai_provider.models.annotators import mediapipe_face as mpf
        if importlib.util.find_spec("mediapipe") is None:
            raise fail(self, "image", "face detection runs mediapipe's face landmarker, and mediapipe is not "
                                      "installed (pip install 'mediapipe>=0.10.30,<0.10.32')")

        _, folder = core_model_folder(self, context, "image", MEDIAPIPE_FOLDER, required=(mpf.TASK_FILE,),
                                      what=f"mediapipe's face landmarker bundle {mpf.TASK_FILE} ({mpf.TASK_SOURCE})")
        rgb = load_rgb(self, context)
        try:
            canvas, faces = mpf.annotate(folder / mpf.TASK_FILE, rgb, max_faces=self.max_faces,
                                         min_confidence=self.min_confidence)
        except mpf.FaceModelError as exc:
            raise fail(self, "image", str(exc)) from None
        if not faces:
            context.logger.info("node %s: no face found (of at least %d pixels) for the face annotator",
                                self.id, mpf.MIN_FACE_PIXELS)
        return save_image(self, context, canvas)
