"""OpenPose skeletons (``dw_openpose_detection``) from DWPose, the input of OpenPose ControlNets.

Type string, version, fields, defaults and category follow InvokeAI 6.11 (``dw_openpose.py``). The two
ONNX models InvokeAI fetches from the hub repo ``yzd-v/DWPose`` (``yolox_l.onnx``, the person detector, and
``dw-ll_ucoco_384.onnx``, the whole-body pose model) load from ``<model root>/core/yzd-v/DWPose`` and run
with onnxruntime (CUDA when the run's device is a GPU and onnxruntime has it); the pipeline and drawing
are :mod:`invokeai_provider.models.annotators.dw_openpose`. numpy, OpenCV and onnxruntime are imported inside
``invoke()``.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.models.model_manager.core_models import CORE_DIR, use_core_model
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import fail, load_rgb, save_image

if TYPE_CHECKING:
    from pathlib import Path

    from invokeai_provider.core.context import InvocationContext
    from invokeai_provider.models.annotators.dw_openpose import OnnxModel

DWPOSE_FOLDER = f"{CORE_DIR}/yzd-v/DWPose"


@invocation("dw_openpose_detection", title="DW Openpose Detection", tags=["controlnet", "dwpose", "openpose"],
            category="controlnet", version="1.1.1", gpu=True)
class DWOpenposeDetectionInvocation(BaseInvocation, WithMetadata, WithBoard):
    """The poses of the people in the image drawn OpenPose-style on black, the size of the image."""

    image: ImageField = InputField(description="The image to process")
    draw_body: bool = InputField(default=True)
    draw_face: bool = InputField(default=False)
    draw_hands: bool = InputField(default=False)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        if importlib.util.find_spec("onnxruntime") is None:
            raise fail(self, "image", "DWPose runs its ONNX models with onnxruntime, which is not installed "
                                      "(pip install onnxruntime, or onnxruntime-gpu on GPU workers)")

        from invokeai_provider.models.annotators import dw_openpose as dw
        rgb = load_rgb(self, context)

        def loader(filename: str, kind: str):  # type: ignore[no-untyped-def]
            def build(folder: "Path", device: str) -> "OnnxModel":
                try:
                    return dw.load_onnx(folder / filename, device, kind=kind)
                except dw.DWPoseModelError as exc:
                    raise fail(self, "image", f"the DWPose {kind} model {exc}") from None
            return build

        with use_core_model(self, context, "image", DWPOSE_FOLDER, loader(dw.DETECTOR_FILE, "detector"),
                            what=f"the DWPose person detector {dw.DETECTOR_FILE} (hub repo {dw.DWPOSE_REPO})",
                            required=(dw.DETECTOR_FILE,)) as detector, \
                use_core_model(self, context, "image", DWPOSE_FOLDER, loader(dw.POSE_FILE, "pose"),
                               what=f"the DWPose whole-body pose model {dw.POSE_FILE} (hub repo {dw.DWPOSE_REPO})",
                               required=(dw.POSE_FILE,)) as pose:
            try:
                canvas = dw.detect_and_draw(detector, pose, rgb, body=self.draw_body, hands=self.draw_hands,
                                            face=self.draw_face)
            except dw.DWPoseModelError as exc:
                raise fail(self, "image", f"the DWPose model {exc}") from None
        return save_image(self, context, canvas)
