"""``controlnet``: a control image, an SD1/SD2/SDXL ControlNet and how it acts, passed to ``denoise_latents`` (type
string, title, version 1.1.3, fields and ``control_output`` as InvokeAI's controlnet.py). Nothing is loaded here;
the residuals are `invokeai_provider.models.stable_diffusion.controlnet`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from invokeai_provider.core.fields import (
    CONTROLNET_MODE_VALUES,
    CONTROLNET_RESIZE_VALUES,
    ControlField,
    ImageField,
    ModelIdentifierField,
)
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.operators.core.controlnet import WeightedStepRange
from invokeai_provider.operators.core.models import check_model

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

SD_BASES = (BaseModelType.StableDiffusion1, BaseModelType.StableDiffusion2, BaseModelType.StableDiffusionXL)


@invocation_output("control_output")
class ControlOutput(BaseInvocationOutput):
    """node output for ControlNet info"""

    control: ControlField = OutputField(description="ControlNet(s) to apply")


@invocation("controlnet", title="ControlNet - SD1.5, SD2, SDXL", tags=["controlnet"], category="conditioning",
            version="1.1.3")
class ControlNetInvocation(BaseInvocation, WeightedStepRange):
    """Collects ControlNet info to pass to other nodes"""

    WEIGHT_FIELD = "control_weight"

    image: ImageField = InputField(description="The control image")
    control_model: ModelIdentifierField = InputField(description="ControlNet model to load",
                                                     ui_model_base=list(SD_BASES), ui_model_type=ModelType.ControlNet)
    # -1..2, one or per step: checked by the validator (pydantic cannot put ge/le on a float-or-list field)
    control_weight: Union[float, list[float]] = InputField(default=1.0, description="The weight given to the "
                                                           "ControlNet")
    begin_step_percent: float = InputField(default=0, ge=0, le=1, description="When the ControlNet is first applied "
                                           "(% of total steps)")
    end_step_percent: float = InputField(default=1, ge=0, le=1, description="When the ControlNet is last applied "
                                         "(% of total steps)")
    control_mode: CONTROLNET_MODE_VALUES = InputField(default="balanced", description="The control mode used")
    resize_mode: CONTROLNET_RESIZE_VALUES = InputField(default="just_resize", description="The resize mode used")


    def invoke(self, context: "InvocationContext") -> ControlOutput:
        check_model(self, "control_model", self.control_model, context, ModelType.ControlNet, SD_BASES)
        return ControlOutput(control=ControlField(
            image=self.image, control_model=self.control_model, control_weight=self.control_weight,
            begin_step_percent=self.begin_step_percent, end_step_percent=self.end_step_percent,
            control_mode=self.control_mode, resize_mode=self.resize_mode))
