"""``flux_controlnet``: a control image, a FLUX ControlNet and how it acts, passed to ``flux_denoise`` (type
string, title, version 1.0.0, fields and ``flux_controlnet_output`` as InvokeAI's flux_controlnet.py). Nothing is
loaded here; the residuals are `invokeai_provider.models.flux.controlnet`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

from invokeai_provider.core.fields import CONTROLNET_RESIZE_VALUES, FluxControlNetField, ImageField, \
    ModelIdentifierField
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

INSTANTX_CONTROL_MODE = ("The control mode for InstantX ControlNet union models. Ignored for other ControlNet models. "
                         "The standard mapping is: canny (0), tile (1), depth (2), blur (3), pose (4), gray (5), low "
                         "quality (6). Negative values will be treated as 'None'.")


@invocation_output("flux_controlnet_output")
class FluxControlNetOutput(BaseInvocationOutput):
    """FLUX ControlNet info"""

    control: FluxControlNetField = OutputField(description="ControlNet(s) to apply")


@invocation("flux_controlnet", title="FLUX ControlNet", tags=["controlnet", "flux"], category="conditioning",
            version="1.0.0")
class FluxControlNetInvocation(BaseInvocation, WeightedStepRange):
    """Collect FLUX ControlNet info to pass to other nodes."""

    WEIGHT_FIELD = "control_weight"

    image: ImageField = InputField(description="The control image")
    control_model: ModelIdentifierField = InputField(description="ControlNet model to load",
                                                     ui_model_base=BaseModelType.Flux,
                                                     ui_model_type=ModelType.ControlNet)
    # -1..2, one or per step: checked by the validator (pydantic cannot put ge/le on a float-or-list field)
    control_weight: Union[float, list[float]] = InputField(default=1.0, description="The weight given to the "
                                                           "ControlNet")
    begin_step_percent: float = InputField(default=0, ge=0, le=1, description="When the ControlNet is first applied "
                                           "(% of total steps)")
    end_step_percent: float = InputField(default=1, ge=0, le=1, description="When the ControlNet is last applied "
                                         "(% of total steps)")
    resize_mode: CONTROLNET_RESIZE_VALUES = InputField(default="just_resize", description="The resize mode used")
    instantx_control_mode: Optional[int] = InputField(default=-1, description=INSTANTX_CONTROL_MODE)


    def invoke(self, context: "InvocationContext") -> FluxControlNetOutput:
        check_model(self, "control_model", self.control_model, context, ModelType.ControlNet, (BaseModelType.Flux,))
        return FluxControlNetOutput(control=FluxControlNetField(
            image=self.image, control_model=self.control_model, control_weight=self.control_weight,
            begin_step_percent=self.begin_step_percent, end_step_percent=self.end_step_percent,
            resize_mode=self.resize_mode, instantx_control_mode=self.instantx_control_mode))
