"""``sd3_model_loader``: splits an SD3 / SD3.5 main into transformer, CLIP-L, CLIP-G, T5 and VAE identifiers, as
InvokeAI's sd3_model_loader.py does (type string, title, version 1.0.1, fields and output).

Each encoder and the VAE may come from a separate model instead of the main (a T5 encoder, a CLIP embed of
variant large for CLIP-L and gigantic for CLIP-G, an sd-3 VAE); the tokenizers always come from the main. Nothing
is loaded: identifiers pass on, pointed at their submodels. A T5 encoder of base any or flux is read through its
``tokenizer_2``/``text_encoder_2``, the main's through ``_3`` (InvokeAI's t5_model_identifier rules). A separate
CLIP embed is read through ``text_encoder_2``, which loads it with its text projection: SD3 uses the projected
pooled output of both CLIPs (InvokeAI 6.11 asks a separate CLIP-L for ``text_encoder``, a CLIPTextModel whose first
output is no pooled vector, so a separate CLIP-L cannot work there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from invokeai_provider.core.fields import CLIPField, ModelIdentifierField, T5EncoderField, TransformerField, VAEField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Input,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.core.taxonomy import BaseModelType, ClipVariantType, ModelType, SubModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.models import ModelInputError, WrongModelKindError, check_model, submodel
from invokeai_provider.operators.flux.model_loader import T5_SLOTS
from invokeai_provider.operators.sd.common import model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

SD3_BASES = (BaseModelType.StableDiffusion3,)
CLIP_DESCRIPTION = "CLIP (tokenizer, text encoder, LoRAs) and skipped layer count"
CLIP_EMBED_DESCRIPTION = "CLIP Embed loader"


@invocation_output("sd3_model_loader_output")
class Sd3ModelLoaderOutput(BaseInvocationOutput):
    """SD3 base model loader output."""

    transformer: TransformerField = OutputField(description="Transformer", title="Transformer")
    clip_l: CLIPField = OutputField(description=CLIP_DESCRIPTION, title="CLIP L")
    clip_g: CLIPField = OutputField(description=CLIP_DESCRIPTION, title="CLIP G")
    t5_encoder: T5EncoderField = OutputField(description="T5 tokenizer and text encoder", title="T5 Encoder")
    vae: VAEField = OutputField(description="VAE", title="VAE")


@invocation("sd3_model_loader", title="Main Model - SD3", tags=["model", "sd3"], category="model", version="1.0.1")
class Sd3ModelLoaderInvocation(BaseInvocation):
    """Loads a SD3 base model, outputting its submodels."""

    # InvokeAI's is a direct input; here an edge may feed it too (the example workflows feed it from a
    # model_identifier node so that the image metadata records the model chosen in the form)
    model: ModelIdentifierField = InputField(description="SD3 model (MMDiTX) to load",
                                             ui_model_base=BaseModelType.StableDiffusion3, ui_model_type=ModelType.Main)
    t5_encoder_model: Optional[ModelIdentifierField] = InputField(
        default=None, description="T5 tokenizer and text encoder", title="T5 Encoder", input=Input.Direct,
        ui_model_type=ModelType.T5Encoder)
    clip_l_model: Optional[ModelIdentifierField] = InputField(
        default=None, description=CLIP_EMBED_DESCRIPTION, title="CLIP L Encoder", input=Input.Direct,
        ui_model_type=ModelType.CLIPEmbed, ui_model_variant=ClipVariantType.L)
    clip_g_model: Optional[ModelIdentifierField] = InputField(
        default=None, description="CLIP-G Embed loader", title="CLIP G Encoder", input=Input.Direct,
        ui_model_type=ModelType.CLIPEmbed, ui_model_variant=ClipVariantType.G)
    vae_model: Optional[ModelIdentifierField] = InputField(
        default=None, description="VAE model to load", title="VAE", ui_model_base=BaseModelType.StableDiffusion3,
        ui_model_type=ModelType.VAE)

    def _check_parts(self, context: "InvocationContext") -> None:
        check_model(self, "model", self.model, context, ModelType.Main, SD3_BASES)
        if self.t5_encoder_model is not None:
            check_model(self, "t5_encoder_model", self.t5_encoder_model, context, ModelType.T5Encoder,
                        tuple(T5_SLOTS))
        if self.vae_model is not None:
            check_model(self, "vae_model", self.vae_model, context, ModelType.VAE, SD3_BASES)
        for field, variant in (("clip_l_model", ClipVariantType.L), ("clip_g_model", ClipVariantType.G)):
            chosen = getattr(self, field)
            if chosen is None:
                continue
            check_model(self, field, chosen, context, ModelType.CLIPEmbed)
            found = model_service(self, context, field).get_config(chosen).variant
            if found is not None and found != variant:
                raise field_error(WrongModelKindError, self, field, f"expected a CLIP embed of variant "
                                  f"{variant.value}, got {chosen.name!r} of variant {getattr(found, 'value', found)}")

    def invoke(self, context: "InvocationContext") -> Sd3ModelLoaderOutput:
        self._check_parts(context)
        config = model_service(self, context, "model").get_config(self.model)
        if config.format.value != "diffusers":  # probing refuses them; a hand-made record might not
            raise field_error(ModelInputError, self, "model", f"the SD3 model {config.name!r} is a "
                              f"{config.format.value}; SD3 mains are diffusers folders (StableDiffusion3Pipeline)")

        def clip(tokenizer: SubModelType, chosen: Optional[ModelIdentifierField], own: SubModelType) -> CLIPField:
            encoder = submodel(chosen, SubModelType.TextEncoder2) if chosen is not None else submodel(self.model, own)
            return CLIPField(tokenizer=submodel(self.model, tokenizer), text_encoder=encoder, loras=[],
                             skipped_layers=0)

        t5 = self.t5_encoder_model or self.model
        t5_tokenizer, t5_encoder = T5_SLOTS[t5.base] if t5.base in T5_SLOTS else T5_SLOTS[BaseModelType.Any]
        return Sd3ModelLoaderOutput(
            transformer=TransformerField(transformer=submodel(self.model, SubModelType.Transformer), loras=[]),
            clip_l=clip(SubModelType.Tokenizer, self.clip_l_model, SubModelType.TextEncoder),
            clip_g=clip(SubModelType.Tokenizer2, self.clip_g_model, SubModelType.TextEncoder2),
            t5_encoder=T5EncoderField(tokenizer=submodel(t5, t5_tokenizer), text_encoder=submodel(t5, t5_encoder),
                                      loras=[]),
            vae=VAEField(vae=submodel(self.vae_model or self.model, SubModelType.VAE)),
        )
