"""``t2i_adapter``: a T2I-Adapter, its image and how it acts, passed to ``denoise_latents`` (type string, title,
version 1.0.4, fields and ``t2i_adapter_output`` as InvokeAI's t2i_adapter.py). Nothing is loaded here; the features
are `invokeai_provider.models.stable_diffusion.t2i_adapter`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from invokeai_provider.core.fields import CONTROLNET_RESIZE_VALUES, ImageField, ModelIdentifierField, T2IAdapterField
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

T2I_BASES = (BaseModelType.StableDiffusion1, BaseModelType.StableDiffusionXL)


@invocation_output("t2i_adapter_output")
class T2IAdapterOutput(BaseInvocationOutput):
    t2i_adapter: T2IAdapterField = OutputField(description="T2I-Adapter(s) to apply", title="T2I Adapter")


@invocation("t2i_adapter", title="T2I-Adapter - SD1.5, SDXL", tags=["t2i_adapter", "control"],
            category="conditioning", version="1.0.4")
class T2IAdapterInvocation(BaseInvocation, WeightedStepRange):
    """Collects T2I-Adapter info to pass to other nodes."""

    image: ImageField = InputField(description="The IP-Adapter image prompt.")
    t2i_adapter_model: ModelIdentifierField = InputField(description="The T2I-Adapter model.",
                                                         title="T2I-Adapter Model", ui_model_base=list(T2I_BASES),
                                                         ui_model_type=ModelType.T2IAdapter, ui_order=-1)
    # -1..2, one or per step: checked by the validator (pydantic cannot put ge/le on a float-or-list field)
    weight: Union[float, list[float]] = InputField(default=1, description="The weight given to the T2I-Adapter",
                                                   title="Weight")
    begin_step_percent: float = InputField(default=0, ge=0, le=1, description="When the T2I-Adapter is first "
                                           "applied (% of total steps)")
    end_step_percent: float = InputField(default=1, ge=0, le=1, description="When the T2I-Adapter is last applied "
                                         "(% of total steps)")
    resize_mode: CONTROLNET_RESIZE_VALUES = InputField(default="just_resize", description="The resize mode applied "
                                                       "to the T2I-Adapter input image so that it matches the target "
                                                       "output size.")


    def invoke(self, context: "InvocationContext") -> T2IAdapterOutput:
        check_model(self, "t2i_adapter_model", self.t2i_adapter_model, context, ModelType.T2IAdapter, T2I_BASES)
        return T2IAdapterOutput(t2i_adapter=T2IAdapterField(
            image=self.image, t2i_adapter_model=self.t2i_adapter_model, weight=self.weight,
            begin_step_percent=self.begin_step_percent, end_step_percent=self.end_step_percent,
            resize_mode=self.resize_mode))
