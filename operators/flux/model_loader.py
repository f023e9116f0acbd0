"""``flux_model_loader``: splits a FLUX.1 main model into transformer, CLIP, T5 and VAE identifiers, as InvokeAI's
flux_model_loader.py does (type string, title, version 1.1.0, fields and output).

InvokeAI takes the T5 encoder, CLIP embed and VAE as separate models, since its FLUX mains are single-file
transformers (BFL's ``flux1-dev.safetensors``, here too: each part left empty is then refused by its field before
anything loads); a main that carries its own parts (a diffusers FLUX folder here, an SDNQ pipeline there) supplies
whichever of them is not selected. Nothing is loaded: identifiers pass on, pointed at the submodel each part is
loaded as (InvokeAI's): ``tokenizer_2``/``text_encoder_2`` of a T5 encoder of base any or flux (``_3`` for an SD3
one), ``tokenizer``/``text_encoder`` of a CLIP embed, ``vae`` of a VAE. The T5 sequence length follows the variant
(256 for schnell, 512 for dev).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional

from invokeai_provider.core.fields import CLIPField, ModelIdentifierField, T5EncoderField, TransformerField, VAEField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.core.taxonomy import BaseModelType, FluxVariantType, ModelType, SubModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.models import ModelInputError, check_model, clip_of, submodel
from invokeai_provider.operators.sd.common import model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

FLUX_BASES = (BaseModelType.Flux,)
# A standalone T5 encoder's tokenizer and encoder submodels by its base (InvokeAI's t5_model_identifier rules)
T5_SLOTS = {BaseModelType.Any: (SubModelType.Tokenizer2, SubModelType.TextEncoder2),
            BaseModelType.Flux: (SubModelType.Tokenizer2, SubModelType.TextEncoder2),
            BaseModelType.StableDiffusion3: (SubModelType.Tokenizer3, SubModelType.TextEncoder3)}


@invocation_output("flux_model_loader_output")
class FluxModelLoaderOutput(BaseInvocationOutput):
    """Flux base model loader output"""

    transformer: TransformerField = OutputField(description="Transformer", title="Transformer")
    clip: CLIPField = OutputField(description="CLIP (tokenizer, text encoder, LoRAs) and skipped layer count",
                                  title="CLIP")
    t5_encoder: T5EncoderField = OutputField(description="T5 tokenizer and text encoder", title="T5 Encoder")
    vae: VAEField = OutputField(description="VAE", title="VAE")
    max_seq_len: Literal[256, 512] = OutputField(
        description="The max sequence length to used for the T5 encoder. (256 for schnell transformer, 512 for dev "
                    "transformer)", title="Max Seq Length")


@invocation("flux_model_loader", title="Main Model - FLUX", tags=["model", "flux"], category="model", version="1.1.0")
class FluxModelLoaderInvocation(BaseInvocation):
    """Loads a flux base model, outputting its submodels."""

    model: ModelIdentifierField = InputField(description="Flux model (Transformer) to load",
                                             ui_model_base=BaseModelType.Flux, ui_model_type=ModelType.Main)
    t5_encoder_model: Optional[ModelIdentifierField] = InputField(
        default=None, description="T5 tokenizer and text encoder", title="T5 Encoder",
        ui_model_type=ModelType.T5Encoder)
    clip_embed_model: Optional[ModelIdentifierField] = InputField(
        default=None, description="CLIP Embed loader", title="CLIP Embed", ui_model_type=ModelType.CLIPEmbed)
    vae_model: Optional[ModelIdentifierField] = InputField(
        default=None, description="VAE model to load", title="VAE", ui_model_base=BaseModelType.Flux,
        ui_model_type=ModelType.VAE)

    def invoke(self, context: "InvocationContext") -> FluxModelLoaderOutput:
        check_model(self, "model", self.model, context, ModelType.Main, FLUX_BASES)
        for field, kind in (("t5_encoder_model", ModelType.T5Encoder), ("clip_embed_model", ModelType.CLIPEmbed),
                            ("vae_model", ModelType.VAE)):
            chosen = getattr(self, field)
            if chosen is not None:
                bases = {ModelType.VAE: FLUX_BASES, ModelType.T5Encoder: tuple(T5_SLOTS)}.get(kind)
                check_model(self, field, chosen, context, kind, bases)
        config = model_service(self, context, "model").get_config(self.model)
        self_contained = config.format.value == "diffusers"
        parts = (("t5_encoder_model", "T5 Encoder", self.t5_encoder_model),
                 ("clip_embed_model", "CLIP Embed", self.clip_embed_model), ("vae_model", "VAE", self.vae_model))
        missing = [] if self_contained else [(field, title) for field, title, chosen in parts if chosen is None]
        if missing:  # a single-file (BFL) transformer: refused by the first empty field, naming them all
            raise field_error(ModelInputError, self, missing[0][0], (
                f"the selected FLUX model {config.name!r} is a {config.format.value} (the transformer alone) and does "
                f"not ship its own {', '.join(title for _, title in missing)}, so "
                f"{'it' if len(missing) == 1 else 'they'} must be selected: "
                f"{', '.join(field for field, _ in missing)}"))
        t5 = self.t5_encoder_model or self.model
        t5_tokenizer, t5_encoder = T5_SLOTS[t5.base] if self.t5_encoder_model else T5_SLOTS[BaseModelType.Flux]
        clip = self.clip_embed_model or self.model
        vae = self.vae_model or self.model
        return FluxModelLoaderOutput(
            transformer=TransformerField(transformer=submodel(self.model, SubModelType.Transformer), loras=[]),
            clip=clip_of(clip),
            t5_encoder=T5EncoderField(tokenizer=submodel(t5, t5_tokenizer), text_encoder=submodel(t5, t5_encoder),
                                      loras=[]),
            vae=VAEField(vae=submodel(vae, SubModelType.VAE)),
            max_seq_len=256 if config.variant is FluxVariantType.Schnell else 512,
        )
