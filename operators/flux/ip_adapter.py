"""``flux_ip_adapter``: an image prompt for FLUX through an XLabs IP-Adapter, passed to ``flux_denoise`` (type
string, title, version 1.0.0, fields, validators and ``ip_adapter_output`` as InvokeAI's flux_ip_adapter.py).

The CLIP vision encoder is not a field: as in InvokeAI, ``clip_vision_model`` (only ViT-L for FLUX) names InvokeAI's
starter encoder, and the node takes the installed one (`invokeai_provider.models.image_encoders.clip_vision.find_clip_vision`).
Nothing is loaded here; the encoding and the attention are `invokeai_provider.models.flux.ip_adapter`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Union

from invokeai_provider.core.fields import ImageField, IPAdapterField, ModelIdentifierField
from invokeai_provider.core.invocation import BaseInvocation, InputField, invocation
from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.ip_adapter import IPAdapterOutput
from invokeai_provider.operators.core.models import check_model
from invokeai_provider.operators.core.controlnet import WeightedStepRange
from invokeai_provider.operators.sd.common import GenerationError, model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext


@invocation("flux_ip_adapter", title="FLUX IP-Adapter", tags=["ip_adapter", "control"], category="conditioning",
            version="1.0.0")
class FluxIPAdapterInvocation(BaseInvocation, WeightedStepRange):
    """Collects FLUX IP-Adapter info to pass to other nodes."""

    image: ImageField = InputField(description="The IP-Adapter image prompt(s).")
    ip_adapter_model: ModelIdentifierField = InputField(description="The IP-Adapter model.",
                                                        title="IP-Adapter Model", ui_model_base=BaseModelType.Flux,
                                                        ui_model_type=ModelType.IPAdapter)
    clip_vision_model: Literal["ViT-L"] = InputField(description="CLIP Vision model to use.", default="ViT-L")
    weight: Union[float, list[float]] = InputField(default=1, description="The weight given to the IP-Adapter",
                                                   title="Weight")
    begin_step_percent: float = InputField(default=0, ge=0, le=1, description="When the IP-Adapter is first "
                                           "applied (% of total steps)")
    end_step_percent: float = InputField(default=1, ge=0, le=1, description="When the IP-Adapter is last applied "
                                         "(% of total steps)")


    def invoke(self, context: "InvocationContext") -> IPAdapterOutput:
        from invokeai_provider.models.image_encoders.clip_vision import ClipVisionError, find_clip_vision

        check_model(self, "ip_adapter_model", self.ip_adapter_model, context, ModelType.IPAdapter,
                    (BaseModelType.Flux,))
        models = model_service(self, context, "clip_vision_model")
        try:
            encoder = find_clip_vision(models.registry.all(), self.clip_vision_model)
        except ClipVisionError as exc:
            raise field_error(GenerationError, self, "clip_vision_model", str(exc)) from None
        return IPAdapterOutput(ip_adapter=IPAdapterField(
            image=self.image, ip_adapter_model=self.ip_adapter_model,
            image_encoder_model=ModelIdentifierField.model_validate(encoder.identifier()), weight=self.weight,
            target_blocks=[],  # InvokeAI leaves these unused for FLUX
            begin_step_percent=self.begin_step_percent, end_step_percent=self.end_step_percent, mask=None))
