"""Model-based preprocessors built on transformers: Depth Anything depth maps, Segment Anything masks and
Grounding DINO text-prompted boxes, under InvokeAI's type strings, fields, defaults and outputs.

InvokeAI downloads these models from the Hugging Face hub on first use. Here no hub is reachable, so each
model choice maps to a ``from_pretrained`` folder ``<model root>/core/<hub repo id>`` (for example
``core/depth-anything/Depth-Anything-V2-Small-hf``): put a snapshot of that repository there. A missing
folder fails naming the node, the field that chose it and the folder. Loaded models are held in the run's
model cache. torch and transformers are imported inside ``invoke()`` only.
"""

from __future__ import annotations

import importlib.util
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import BaseModel, Field

from invokeai_provider.core.fields import BoundingBoxField, ImageField, TensorField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.core.limits import PROMPT_LENGTH
from invokeai_provider.models.image_util.arrays import to_uint8
from invokeai_provider.models.model_manager.core_models import CORE_DIR, CoreModel, use_core_model
from invokeai_provider.operators.core.primitives import BoundingBoxCollectionOutput, ImageOutput, MaskOutput
from invokeai_provider.operators.image.io import fail, load_image, save_image

if TYPE_CHECKING:
    from pathlib import Path

    from PIL.Image import Image

    from invokeai_provider.core.context import InvocationContext


def core_folder(repo_id: str) -> str:
    """Where a core model InvokeAI would fetch from hub repository ``repo_id`` lives under the model root."""
    return f"{CORE_DIR}/{repo_id}"


# --- Depth Anything ----------------------------------------------------------------------------------

DEPTH_ANYTHING_MODEL_SIZES = Literal["large", "base", "small", "small_v2"]
# The hub repositories InvokeAI uses for each size; here, their folders under <model root>/core.
DEPTH_ANYTHING_MODELS: dict[str, str] = {
    "large": "LiheYoung/depth-anything-large-hf",
    "base": "LiheYoung/depth-anything-base-hf",
    "small": "LiheYoung/depth-anything-small-hf",
    "small_v2": "depth-anything/Depth-Anything-V2-Small-hf",
}


def _load_depth_anything(path: "Path", device: str) -> CoreModel:
    from transformers import AutoImageProcessor, DepthAnythingForDepthEstimation

    model = DepthAnythingForDepthEstimation.from_pretrained(path, local_files_only=True).to(device).eval()
    return CoreModel(model, AutoImageProcessor.from_pretrained(path, local_files_only=True))


def depth_to_image(depth: Any) -> "Image":
    """A depth prediction as an 8-bit greyscale image stretched to 0..255 (near is bright), as transformers'
    depth-estimation pipeline (which InvokeAI uses) renders it; a flat prediction is black."""
    import numpy as np
    from PIL import Image

    values = np.asarray(depth, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return Image.fromarray(to_uint8(scaled, scale=255.0, rounding="floor"))


@invocation("depth_anything_depth_estimation", title="Depth Anything Depth Estimation",
            tags=["controlnet", "depth", "depth anything"], category="controlnet", version="1.0.0",
            gpu=True)
class DepthAnythingDepthEstimationInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A depth map of the image, the size of the image, for depth ControlNets."""

    image: ImageField = InputField(description="The image to process")
    model_size: DEPTH_ANYTHING_MODEL_SIZES = InputField(default="small_v2",
                                                        description="The size of the depth model to use")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import torch

        image = load_image(self, context, "image", "RGB")
        folder = core_folder(DEPTH_ANYTHING_MODELS[self.model_size])
        with use_core_model(self, context, "model_size", folder, _load_depth_anything,
                            what="a transformers DepthAnythingForDepthEstimation with its image processor") as core, \
                torch.no_grad():
            inputs = core.processor(images=image, return_tensors="pt").to(core.device)
            outputs = core.model(**inputs)
            [result] = core.processor.post_process_depth_estimation(outputs, target_sizes=[(image.height, image.width)])
        depth = result["predicted_depth"].float().cpu().numpy()
        return save_image(self, context, depth_to_image(depth))


# --- Segment Anything --------------------------------------------------------------------------------

SegmentAnythingModelKey = Literal[
    "segment-anything-base",
    "segment-anything-large",
    "segment-anything-huge",
    "segment-anything-2-tiny",
    "segment-anything-2-small",
    "segment-anything-2-base",
    "segment-anything-2-large",
]
SEGMENT_ANYTHING_MODEL_IDS: dict[str, str] = {
    "segment-anything-base": "facebook/sam-vit-base",
    "segment-anything-large": "facebook/sam-vit-large",
    "segment-anything-huge": "facebook/sam-vit-huge",
    "segment-anything-2-tiny": "facebook/sam2.1-hiera-tiny",
    "segment-anything-2-small": "facebook/sam2.1-hiera-small",
    "segment-anything-2-base": "facebook/sam2.1-hiera-base-plus",
    "segment-anything-2-large": "facebook/sam2.1-hiera-large",
}
# The prompt encoder ignores points with this label: it pads objects that have fewer points than others.
_PAD_LABEL = -10


class SAMPointLabel(Enum):
    """InvokeAI's point labels, passed to the model as their values."""

    negative = -1
    neutral = 0
    positive = 1


class SAMPoint(BaseModel):
    x: int = Field(..., description="The x-coordinate of the point")
    y: int = Field(..., description="The y-coordinate of the point")
    label: SAMPointLabel = Field(..., description="The label of the point")


class SAMPointsField(BaseModel):
    points: list[SAMPoint] = Field(..., description="The points of the object", min_length=1)


def _load_sam(path: "Path", device: str) -> CoreModel:
    from transformers import SamModel, SamProcessor

    model = SamModel.from_pretrained(path, local_files_only=True).to(device).eval()
    return CoreModel(model, SamProcessor.from_pretrained(path, local_files_only=True))


def _load_sam2(path: "Path", device: str) -> CoreModel:
    from transformers import Sam2Model, Sam2Processor

    model = Sam2Model.from_pretrained(path, local_files_only=True).to(device).eval()
    return CoreModel(model, Sam2Processor.from_pretrained(path, local_files_only=True))


def refine_to_polygon(mask: Any) -> Any:
    """The mask redrawn as its largest outer contour, filled: smoother edges, no holes, no stray islands.
    An empty mask stays empty."""
    import cv2
    import numpy as np

    binary = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    refined = np.zeros_like(binary)
    if contours:
        cv2.fillPoly(refined, [max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.int32)], color=(1,))
    return refined.astype(bool)


@invocation("segment_anything", title="Segment Anything", tags=["prompt", "segmentation", "sam", "sam2"],
            category="segmentation", version="1.3.0", gpu=True)
class SegmentAnythingInvocation(BaseInvocation):
    """One mask of the objects that boxes and/or point lists pick out of the image (SAM or SAM2)."""

    model: SegmentAnythingModelKey = InputField(description="The Segment Anything model to use (SAM or SAM2).")
    image: ImageField = InputField(description="The image to segment.")
    bounding_boxes: Optional[list[BoundingBoxField]] = InputField(
        default=None, description="The bounding boxes to prompt the model with.")
    point_lists: Optional[list[SAMPointsField]] = InputField(
        default=None, description="The list of point lists to prompt the model with. Each list of points "
                                  "represents a single object.")
    apply_polygon_refinement: bool = InputField(
        default=True, description="Whether to apply polygon refinement to the masks. This will smooth the edges "
                                  "of the masks slightly and ensure that each mask consists of a single closed "
                                  "polygon (before merging).")
    mask_filter: Literal["all", "largest", "highest_box_score"] = InputField(
        default="all", description="The filtering to apply to the detected masks before merging them into a "
                                   "final output.")

    def invoke(self, context: "InvocationContext") -> MaskOutput:
        import torch

        boxes = self.bounding_boxes or []
        point_lists = self.point_lists or []
        if boxes and point_lists and len(boxes) != len(point_lists):
            raise fail(self, "point_lists", f"expected one point list per bounding box ({len(boxes)}), "
                                            f"got {len(point_lists)}")
        if self.mask_filter == "highest_box_score" and not boxes:
            raise fail(self, "mask_filter", "highest_box_score needs bounding_boxes (with scores) to choose by")
        image = load_image(self, context, "image", "RGB")
        if not boxes and not point_lists:
            combined = torch.zeros((image.height, image.width), dtype=torch.bool)
        else:
            masks = self._segment(context, image, boxes, point_lists)
            combined = torch.stack(self._filter(masks, boxes)).amax(dim=0)
        mask = combined.unsqueeze(0)  # [1, H, W]
        return MaskOutput(mask=TensorField(tensor_name=context.tensors.save(mask)), width=image.width,
                          height=image.height)

    def _segment(self, context: "InvocationContext", image: "Image", boxes: list[BoundingBoxField],
                 point_lists: list[SAMPointsField]) -> list[Any]:
        """One boolean [H, W] mask per object (the union of the model's candidate masks for it)."""
        import torch

        repo = SEGMENT_ANYTHING_MODEL_IDS[self.model]
        sam2 = "sam2" in repo
        kwargs: dict[str, Any] = {}
        if boxes:
            kwargs["input_boxes"] = [[[b.x_min, b.y_min, b.x_max, b.y_max] for b in boxes]]
        if point_lists:
            width = max(len(p.points) for p in point_lists)
            points: list[list[list[int]]] = []
            labels: list[list[int]] = []
            for objects in point_lists:  # pad to equal counts with points the model ignores
                pad = width - len(objects.points)
                points.append([[p.x, p.y] for p in objects.points] + [[0, 0]] * pad)
                labels.append([p.label.value for p in objects.points] + [_PAD_LABEL] * pad)
            kwargs["input_points"] = [points]
            kwargs["input_labels"] = [labels]
        if sam2 and importlib.util.find_spec("torchvision") is None:
            raise fail(self, "model", f"{self.model} is a SAM2 model: transformers' Sam2Processor needs torchvision, "
                                      "which is not installed; install torchvision or choose a segment-anything-* "
                                      "(SAM) model")
        what = ("a transformers Sam2Model with its Sam2Processor" if sam2
                else "a transformers SamModel with its SamProcessor")
        with use_core_model(self, context, "model", core_folder(repo), _load_sam2 if sam2 else _load_sam,
                            what=what) as core, torch.no_grad():
            inputs = core.processor(images=image, return_tensors="pt", **kwargs).to(core.device)
            outputs = core.model(**inputs)
            sizes = {"original_sizes": inputs["original_sizes"]}
            if not sam2:
                sizes["reshaped_input_sizes"] = inputs["reshaped_input_sizes"]
            [candidates] = core.processor.post_process_masks(outputs.pred_masks.cpu(), **sizes)
        per_object = list(candidates.bool().amax(dim=1).unbind(0))  # [objects, candidates, H, W] -> [H, W] each
        if self.apply_polygon_refinement:
            per_object = [torch.from_numpy(refine_to_polygon(m.numpy())) for m in per_object]
        return per_object

    def _filter(self, masks: list[Any], boxes: list[BoundingBoxField]) -> list[Any]:
        if self.mask_filter == "largest":
            return [max(masks, key=lambda m: int(m.sum()))]
        if self.mask_filter == "highest_box_score":
            scores = [b.score if b.score is not None else -1.0 for b in boxes]
            return [masks[max(range(len(masks)), key=lambda i: scores[i])]]
        return masks


# --- Grounding DINO ----------------------------------------------------------------------------------

GroundingDinoModelKey = Literal["grounding-dino-tiny", "grounding-dino-base"]
GROUNDING_DINO_MODEL_IDS: dict[str, str] = {
    "grounding-dino-tiny": "IDEA-Research/grounding-dino-tiny",
    "grounding-dino-base": "IDEA-Research/grounding-dino-base",
}


def _load_grounding_dino(path: "Path", device: str) -> CoreModel:
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    model = GroundingDinoForObjectDetection.from_pretrained(path, local_files_only=True).to(device).eval()
    return CoreModel(model, AutoProcessor.from_pretrained(path, local_files_only=True))


@invocation("grounding_dino", title="Grounding DINO (Text Prompt Object Detection)",
            tags=["prompt", "object detection"], category="segmentation", version="1.0.0", gpu=True)
class GroundingDinoInvocation(BaseInvocation):
    """Boxes around what a text prompt names (zero-shot detection), best score first; feeds segment_anything."""

    model: GroundingDinoModelKey = InputField(description="The Grounding DINO model to use.")
    prompt: str = InputField(description="The prompt describing the object to segment.", limit=PROMPT_LENGTH)
    image: ImageField = InputField(description="The image to segment.")
    detection_threshold: float = InputField(
        default=0.3, ge=0.0, le=1.0,
        description="The detection threshold for the Grounding DINO model. All detected bounding boxes with scores "
                    "above this threshold will be returned.")

    def invoke(self, context: "InvocationContext") -> BoundingBoxCollectionOutput:
        import torch

        image = load_image(self, context, "image", "RGB")
        label = self.prompt if self.prompt.endswith(".") else self.prompt + "."  # the model's phrase separator
        repo = GROUNDING_DINO_MODEL_IDS[self.model]
        with use_core_model(self, context, "model", core_folder(repo), _load_grounding_dino,
                            what="a transformers GroundingDinoForObjectDetection with its processor "
                                 "(image processor and tokenizer)") as core, torch.no_grad():
            processor = core.processor
            text = processor.tokenizer(label, return_tensors="pt")
            pixels = processor.image_processor(image, return_tensors="pt")
            outputs = core.model(**text.to(core.device), **pixels.to(core.device))
            [found] = processor.image_processor.post_process_object_detection(
                outputs=outputs, threshold=self.detection_threshold,
                target_sizes=torch.tensor([[image.height, image.width]]))
        boxes: list[BoundingBoxField] = []
        for score, box in zip(found["scores"].tolist(), found["boxes"].float().cpu().int().tolist()):
            x_min, y_min, x_max, y_max = box
            # A predicted box may reach past the border; BoundingBoxField is non-negative, so clip it to the image.
            x_min, x_max = (min(max(v, 0), image.width) for v in (x_min, x_max))
            y_min, y_max = (min(max(v, 0), image.height) for v in (y_min, y_max))
            boxes.append(BoundingBoxField(x_min=x_min, x_max=x_max, y_min=y_min, y_max=y_max,
                                          score=min(max(float(score), 0.0), 1.0)))
        boxes.sort(key=lambda b: b.score or 0.0, reverse=True)
        return BoundingBoxCollectionOutput(collection=boxes)
