"""``flux_redux``: an image prompt for FLUX, as Redux tokens that ``flux_denoise`` appends to the prompt's (type
string, title, version 2.1.0, fields and ``flux_redux_output`` as InvokeAI's flux_redux.py). The SigLIP model is
not a field: like InvokeAI, the node takes the installed one (`invokeai_provider.models.flux.redux.find_siglip`).
The tokens are stored on the CPU, as InvokeAI stores them. The encoding is `invokeai_provider.models.flux.redux`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional

from invokeai_provider.core.fields import FluxReduxConditioningField, ImageField, ModelIdentifierField, TensorField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Classification,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.models import check_model
from invokeai_provider.operators.sd.common import GenerationError, model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

DOWNSAMPLING_FUNCTIONS = Literal["nearest", "bilinear", "bicubic", "area", "nearest-exact"]


@invocation_output("flux_redux_output")
class FluxReduxOutput(BaseInvocationOutput):
    """The conditioning output of a FLUX Redux invocation."""

    redux_cond: FluxReduxConditioningField = OutputField(description="FLUX Redux conditioning tensor",
                                                         title="Conditioning")


@invocation("flux_redux", title="FLUX Redux", tags=["ip_adapter", "control"], category="conditioning",
            version="2.1.0", classification=Classification.Beta, gpu=True)
class FluxReduxInvocation(BaseInvocation):
    """Runs a FLUX Redux model to generate a conditioning tensor."""

    image: ImageField = InputField(description="The FLUX Redux image prompt.")
    mask: Optional[TensorField] = InputField(
        default=None, description="The bool mask associated with this FLUX Redux image prompt. Excluded regions "
        "should be set to False, included regions should be set to True.")
    redux_model: ModelIdentifierField = InputField(description="The FLUX Redux model to use.",
                                                   title="FLUX Redux Model", ui_model_base=BaseModelType.Flux,
                                                   ui_model_type=ModelType.FluxRedux)
    downsampling_factor: int = InputField(ge=1, le=9, default=1, description="Redux Downsampling Factor (1-9)")
    downsampling_function: DOWNSAMPLING_FUNCTIONS = InputField(default="area",
                                                               description="Redux Downsampling Function")
    weight: float = InputField(ge=0, le=1, default=1.0, description="Redux weight (0.0-1.0)")

    def invoke(self, context: "InvocationContext") -> FluxReduxOutput:
        from invokeai_provider.models.flux import redux

        check_model(self, "redux_model", self.redux_model, context, ModelType.FluxRedux, (BaseModelType.Flux,))
        models = model_service(self, context, "redux_model")
        try:
            siglip = redux.find_siglip(models.registry.all())
        except redux.ReduxError as exc:
            raise field_error(GenerationError, self, "redux_model", str(exc)) from None
        image = context.images.get_pil(self.image.image_name, mode="RGB")
        context.util.signal_progress("Running SigLIP")
        with models.load(ModelIdentifierField.model_validate(siglip.identifier())) as vision:
            encoded = redux.siglip_encode(vision, image)
        with models.load(self.redux_model) as embedder:
            tokens = redux.redux_embed(embedder, encoded)
        try:
            tokens = redux.downsample_and_weight(tokens, self.downsampling_factor, self.downsampling_function,
                                                 self.weight)
        except redux.ReduxError as exc:
            raise field_error(GenerationError, self, "downsampling_factor", str(exc)) from None
        name = context.tensors.save(tokens.detach().to("cpu"))
        return FluxReduxOutput(redux_cond=FluxReduxConditioningField(conditioning=TensorField(tensor_name=name),
                                                                     mask=self.mask))
