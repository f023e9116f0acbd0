"""Model identifier and loader nodes: SD1/SD2/SDXL main, refiner, VAE and LoRA loaders, seamless, FreeU
and CLIP skip.

None of these loads weights. They pass model *identifiers* along: a loader splits one main model
identifier into its submodels (same key, `submodel_type` set), the LoRA loaders append `LoRAField`s to
the `loras` lists that later nodes patch in, and seamless / FreeU / CLIP skip set one setting each.
Type strings, titles, versions, fields and outputs follow InvokeAI's `invocations/model.py`,
`invocations/sdxl.py` and (for `clip_skip`) `invocations/compel.py`.

Checks done when a node runs: the identifier's kind and that it is installed
(:mod:`invokeai_provider.operators.core.models`, shared with the other model-taking families); a LoRA
already in a `loras` list is refused rather than applied twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

from invokeai_provider.core.fields import (
    CLIPField,
    FreeUConfig,
    LoRAField,
    ModelIdentifierField,
    UNetField,
    VAEField,
)
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Input,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.core.taxonomy import BaseModelType, ModelType, SubModelType
from invokeai_provider.operators.core.models import (
    apply_lora_collection,
    check_installed,
    check_kind,
    check_model,
    clip_of,
    refuse_applied,
    submodel,
    unet_of,
    with_lora,
)
from invokeai_provider.operators.sd.model_fields import (
    CLIP_DESCRIPTION,
    MAIN_MODEL_DESCRIPTION,
    UNET_DESCRIPTION,
    VAE_DESCRIPTION,
    LoRALoaderOutput,
    SDXLLoRALoaderOutput,
    VAEOutput,
)

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "model"

# Field descriptions shared with InvokeAI's FieldDescriptions.
_SDXL_MAIN_MODEL = "SDXL Main model (UNet, VAE, CLIP1, CLIP2) to load"
_SDXL_REFINER_MODEL = "SDXL Refiner Main Modde (UNet, VAE, CLIP2) to load"
_VAE_MODEL = "VAE model to load"
_LORA_MODEL = "LoRA model to load"
_LORA_WEIGHT = "The weight at which the LoRA is applied to each model"
_LORA_COLLECTION = "LoRA models and weights. May be a single LoRA or collection."
_SKIPPED_LAYERS = "Number of layers to skip in text encoder"
_FREEU_S1 = ('Scaling factor for stage 1 to attenuate the contributions of the skip features. This is done to '
             'mitigate the "oversmoothing effect" in the enhanced denoising process.')
_FREEU_S2 = ('Scaling factor for stage 2 to attenuate the contributions of the skip features. This is done to '
             'mitigate the "oversmoothing effect" in the enhanced denoising process.')
_FREEU_B1 = "Scaling factor for stage 1 to amplify the contributions of backbone features."
_FREEU_B2 = "Scaling factor for stage 2 to amplify the contributions of backbone features."

# The bases InvokeAI's editor offers for each model field.
SD12_BASES = (BaseModelType.StableDiffusion1, BaseModelType.StableDiffusion2)
SDXL_BASES = (BaseModelType.StableDiffusionXL,)
SDXL_REFINER_BASES = (BaseModelType.StableDiffusionXLRefiner,)
VAE_BASES = (
    BaseModelType.StableDiffusion1,
    BaseModelType.StableDiffusion2,
    BaseModelType.StableDiffusionXL,
    BaseModelType.StableDiffusion3,
    BaseModelType.Flux,
    BaseModelType.Flux2,
)


# --- outputs -------------------------------------------------------------------------------------------


@invocation_output("unet_output")
class UNetOutput(BaseInvocationOutput):
    """A UNet field."""

    unet: UNetField = OutputField(description=UNET_DESCRIPTION, title="UNet")


@invocation_output("clip_output")
class CLIPOutput(BaseInvocationOutput):
    """A CLIP field."""

    clip: CLIPField = OutputField(description=CLIP_DESCRIPTION, title="CLIP")


@invocation_output("model_loader_output")
class ModelLoaderOutput(UNetOutput, CLIPOutput, VAEOutput):
    """The VAE, CLIP and UNet of an SD1/SD2 main model."""


@invocation_output("model_identifier_output")
class ModelIdentifierOutput(BaseInvocationOutput):
    """One model identifier."""

    model: ModelIdentifierField = OutputField(description="Model identifier", title="Model")


@invocation_output("lora_selector_output")
class LoRASelectorOutput(BaseInvocationOutput):
    """A LoRA and the weight to apply it at."""

    lora: LoRAField = OutputField(description="LoRA model and weight", title="LoRA")


@invocation_output("seamless_output")
class SeamlessModeOutput(BaseInvocationOutput):
    """UNet and VAE with their seamless axes set; either may be absent."""

    unet: Optional[UNetField] = OutputField(default=None, description=UNET_DESCRIPTION, title="UNet")
    vae: Optional[VAEField] = OutputField(default=None, description=VAE_DESCRIPTION, title="VAE")


@invocation_output("sdxl_model_loader_output")
class SDXLModelLoaderOutput(BaseInvocationOutput):
    """The UNet, both CLIPs and the VAE of an SDXL base model."""

    unet: UNetField = OutputField(description=UNET_DESCRIPTION, title="UNet")
    clip: CLIPField = OutputField(description=CLIP_DESCRIPTION, title="CLIP 1")
    clip2: CLIPField = OutputField(description=CLIP_DESCRIPTION, title="CLIP 2")
    vae: VAEField = OutputField(description=VAE_DESCRIPTION, title="VAE")


@invocation_output("sdxl_refiner_model_loader_output")
class SDXLRefinerModelLoaderOutput(BaseInvocationOutput):
    """The UNet, second CLIP and VAE of an SDXL refiner model."""

    unet: UNetField = OutputField(description=UNET_DESCRIPTION, title="UNet")
    clip2: CLIPField = OutputField(description=CLIP_DESCRIPTION, title="CLIP 2")
    vae: VAEField = OutputField(description=VAE_DESCRIPTION, title="VAE")


@invocation_output("clip_skip_output")
class CLIPSkipInvocationOutput(BaseInvocationOutput):
    """A CLIP field with its skipped layer count raised."""

    clip: Optional[CLIPField] = OutputField(default=None, description=CLIP_DESCRIPTION, title="CLIP")


# --- any model -----------------------------------------------------------------------------------------


@invocation("model_identifier", title="Any Model", tags=["model"], category=_CATEGORY, version="1.0.1")
class ModelIdentifierInvocation(BaseInvocation):
    """Passes any model's identifier through unchanged. Its type is not checked here, so a node further on
    that wants another kind of model fails when it runs."""

    model: ModelIdentifierField = InputField(description="The model to select", title="Model")

    def invoke(self, context: "InvocationContext") -> ModelIdentifierOutput:
        check_installed(self, "model", self.model, context)
        return ModelIdentifierOutput(model=self.model)


# --- main model loaders --------------------------------------------------------------------------------


@invocation("main_model_loader", title="Main Model - SD1.5, SD2", tags=["model"], category=_CATEGORY,
            version="1.0.4")
class MainModelLoaderInvocation(BaseInvocation):
    """Splits an SD1/SD2 main model into UNet (with scheduler), CLIP (tokenizer, text encoder) and VAE
    identifiers."""

    model: ModelIdentifierField = InputField(description=MAIN_MODEL_DESCRIPTION, ui_model_base=list(SD12_BASES),
                                             ui_model_type=ModelType.Main)

    def invoke(self, context: "InvocationContext") -> ModelLoaderOutput:
        check_model(self, "model", self.model, context, ModelType.Main, SD12_BASES)
        return ModelLoaderOutput(
            unet=unet_of(self.model),
            clip=clip_of(self.model, SubModelType.Tokenizer, SubModelType.TextEncoder),
            vae=VAEField(vae=submodel(self.model, SubModelType.VAE)),
        )


@invocation("sdxl_model_loader", title="Main Model - SDXL", tags=["model", "sdxl"], category=_CATEGORY,
            version="1.0.4")
class SDXLModelLoaderInvocation(BaseInvocation):
    """Splits an SDXL base model into UNet, CLIP 1 (tokenizer/text_encoder), CLIP 2
    (tokenizer_2/text_encoder_2) and VAE identifiers."""

    model: ModelIdentifierField = InputField(description=_SDXL_MAIN_MODEL,
                                             ui_model_base=BaseModelType.StableDiffusionXL,
                                             ui_model_type=ModelType.Main)

    def invoke(self, context: "InvocationContext") -> SDXLModelLoaderOutput:
        check_model(self, "model", self.model, context, ModelType.Main, SDXL_BASES)
        return SDXLModelLoaderOutput(
            unet=unet_of(self.model),
            clip=clip_of(self.model, SubModelType.Tokenizer, SubModelType.TextEncoder),
            clip2=clip_of(self.model, SubModelType.Tokenizer2, SubModelType.TextEncoder2),
            vae=VAEField(vae=submodel(self.model, SubModelType.VAE)),
        )


@invocation("sdxl_refiner_model_loader", title="Refiner Model - SDXL", tags=["model", "sdxl", "refiner"],
            category=_CATEGORY, version="1.0.4")
class SDXLRefinerModelLoaderInvocation(BaseInvocation):
    """Splits an SDXL refiner model into UNet, CLIP 2 (tokenizer_2/text_encoder_2) and VAE identifiers."""

    model: ModelIdentifierField = InputField(description=_SDXL_REFINER_MODEL,
                                             ui_model_base=BaseModelType.StableDiffusionXLRefiner,
                                             ui_model_type=ModelType.Main)

    def invoke(self, context: "InvocationContext") -> SDXLRefinerModelLoaderOutput:
        check_model(self, "model", self.model, context, ModelType.Main, SDXL_REFINER_BASES)
        return SDXLRefinerModelLoaderOutput(
            unet=unet_of(self.model),
            clip2=clip_of(self.model, SubModelType.Tokenizer2, SubModelType.TextEncoder2),
            vae=VAEField(vae=submodel(self.model, SubModelType.VAE)),
        )


@invocation("vae_loader", title="VAE Model - SD1.5, SD2, SDXL, SD3, FLUX", tags=["vae", "model"],
            category=_CATEGORY, version="1.0.4")
class VAELoaderInvocation(BaseInvocation):
    """Wraps a standalone VAE model's identifier in a VAE field (no seamless axes)."""

    vae_model: ModelIdentifierField = InputField(description=_VAE_MODEL, title="VAE", ui_model_base=list(VAE_BASES),
                                                 ui_model_type=ModelType.VAE)

    def invoke(self, context: "InvocationContext") -> VAEOutput:
        check_model(self, "vae_model", self.vae_model, context, ModelType.VAE, VAE_BASES)
        return VAEOutput(vae=VAEField(vae=self.vae_model))


# --- LoRAs ---------------------------------------------------------------------------------------------


@invocation("lora_loader", title="Apply LoRA - SD1.5", tags=["model"], category=_CATEGORY, version="1.0.4")
class LoRALoaderInvocation(BaseInvocation):
    """Adds one LoRA, at `weight`, to the LoRA lists of the UNet and CLIP that come in (either may be left
    unconnected; its output is then empty)."""

    lora: ModelIdentifierField = InputField(description=_LORA_MODEL, title="LoRA",
                                            ui_model_base=BaseModelType.StableDiffusion1, ui_model_type=ModelType.LoRA)
    weight: float = InputField(default=0.75, description=_LORA_WEIGHT)
    unet: Optional[UNetField] = InputField(default=None, description=UNET_DESCRIPTION, input=Input.Connection,
                                           title="UNet")
    clip: Optional[CLIPField] = InputField(default=None, description=CLIP_DESCRIPTION, input=Input.Connection,
                                           title="CLIP")

    def invoke(self, context: "InvocationContext") -> LoRALoaderOutput:
        # InvokeAI's editor offers SD1 LoRAs only, but its API takes SD2 ones too.
        check_model(self, "lora", self.lora, context, ModelType.LoRA, SD12_BASES)
        refuse_applied(self, (("unet", self.unet), ("clip", self.clip)), self.lora)
        applied = LoRAField(lora=self.lora, weight=self.weight)
        return LoRALoaderOutput(unet=with_lora(self.unet, applied), clip=with_lora(self.clip, applied))


@invocation("lora_selector", title="Select LoRA", tags=["model"], category=_CATEGORY, version="1.0.3")
class LoRASelectorInvocation(BaseInvocation):
    """Pairs a LoRA model with a weight, for the LoRA collection loaders."""

    lora: ModelIdentifierField = InputField(description=_LORA_MODEL, title="LoRA", ui_model_type=ModelType.LoRA)
    weight: float = InputField(default=0.75, description=_LORA_WEIGHT)

    def invoke(self, context: "InvocationContext") -> LoRASelectorOutput:
        check_kind(self, "lora", self.lora, ModelType.LoRA)
        return LoRASelectorOutput(lora=LoRAField(lora=self.lora, weight=self.weight))


@invocation("lora_collection_loader", title="Apply LoRA Collection - SD1.5", tags=["model"], category=_CATEGORY,
            version="1.1.3")
class LoRACollectionLoader(BaseInvocation):
    """Adds one LoRA or a list of them to the LoRA lists of the UNet and CLIP that come in."""

    loras: Optional[Union[LoRAField, list[LoRAField]]] = InputField(
        default=None, description=_LORA_COLLECTION, title="LoRAs", ui_model_base=list(SD12_BASES),
        ui_model_type=ModelType.LoRA)
    unet: Optional[UNetField] = InputField(default=None, description=UNET_DESCRIPTION, input=Input.Connection,
                                           title="UNet")
    clip: Optional[CLIPField] = InputField(default=None, description=CLIP_DESCRIPTION, input=Input.Connection,
                                           title="CLIP")

    def invoke(self, context: "InvocationContext") -> LoRALoaderOutput:
        out = apply_lora_collection(self, self.loras, {"unet": self.unet, "clip": self.clip}, SD12_BASES, context)
        return LoRALoaderOutput(**out)


@invocation("sdxl_lora_loader", title="Apply LoRA - SDXL", tags=["lora", "model"], category=_CATEGORY,
            version="1.0.5")
class SDXLLoRALoaderInvocation(BaseInvocation):
    """Adds one SDXL LoRA, at `weight`, to the LoRA lists of the UNet and both CLIPs that come in."""

    lora: ModelIdentifierField = InputField(description=_LORA_MODEL, title="LoRA",
                                            ui_model_base=BaseModelType.StableDiffusionXL, ui_model_type=ModelType.LoRA)
    weight: float = InputField(default=0.75, description=_LORA_WEIGHT)
    unet: Optional[UNetField] = InputField(default=None, description=UNET_DESCRIPTION, input=Input.Connection,
                                           title="UNet")
    clip: Optional[CLIPField] = InputField(default=None, description=CLIP_DESCRIPTION, input=Input.Connection,
                                           title="CLIP 1")
    clip2: Optional[CLIPField] = InputField(default=None, description=CLIP_DESCRIPTION, input=Input.Connection,
                                            title="CLIP 2")

    def invoke(self, context: "InvocationContext") -> SDXLLoRALoaderOutput:
        check_model(self, "lora", self.lora, context, ModelType.LoRA, SDXL_BASES)
        refuse_applied(self, (("unet", self.unet), ("clip", self.clip), ("clip2", self.clip2)), self.lora)
        applied = LoRAField(lora=self.lora, weight=self.weight)
        return SDXLLoRALoaderOutput(unet=with_lora(self.unet, applied), clip=with_lora(self.clip, applied),
                                    clip2=with_lora(self.clip2, applied))


@invocation("sdxl_lora_collection_loader", title="Apply LoRA Collection - SDXL", tags=["model"], category=_CATEGORY,
            version="1.1.3")
class SDXLLoRACollectionLoader(BaseInvocation):
    """Adds one SDXL LoRA or a list of them to the LoRA lists of the UNet and both CLIPs that come in."""

    loras: Optional[Union[LoRAField, list[LoRAField]]] = InputField(
        default=None, description=_LORA_COLLECTION, title="LoRAs", ui_model_base=list(SDXL_BASES),
        ui_model_type=ModelType.LoRA)
    unet: Optional[UNetField] = InputField(default=None, description=UNET_DESCRIPTION, input=Input.Connection,
                                           title="UNet")
    clip: Optional[CLIPField] = InputField(default=None, description=CLIP_DESCRIPTION, input=Input.Connection,
                                           title="CLIP")
    clip2: Optional[CLIPField] = InputField(default=None, description=CLIP_DESCRIPTION, input=Input.Connection,
                                            title="CLIP 2")

    def invoke(self, context: "InvocationContext") -> SDXLLoRALoaderOutput:
        out = apply_lora_collection(self, self.loras, {"unet": self.unet, "clip": self.clip, "clip2": self.clip2},
                                     SDXL_BASES, context)
        return SDXLLoRALoaderOutput(**out)


# --- UNet / VAE / CLIP settings ------------------------------------------------------------------------


@invocation("seamless", title="Apply Seamless - SD1.5, SDXL", tags=["seamless", "model"], category=_CATEGORY,
            version="1.0.2")
class SeamlessModeInvocation(BaseInvocation):
    """Sets the seamless (tiling) axes on the UNet and VAE that come in: "x" and/or "y", or none."""

    unet: Optional[UNetField] = InputField(default=None, description=UNET_DESCRIPTION, input=Input.Connection,
                                           title="UNet")
    vae: Optional[VAEField] = InputField(default=None, description=_VAE_MODEL, input=Input.Connection, title="VAE")
    seamless_y: bool = InputField(default=True, input=Input.Any, description="Specify whether Y axis is seamless")
    seamless_x: bool = InputField(default=True, input=Input.Any, description="Specify whether X axis is seamless")

    def invoke(self, context: "InvocationContext") -> SeamlessModeOutput:
        axes = [axis for axis, on in (("x", self.seamless_x), ("y", self.seamless_y)) if on]
        unet = None if self.unet is None else self.unet.model_copy(deep=True, update={"seamless_axes": list(axes)})
        vae = None if self.vae is None else self.vae.model_copy(deep=True, update={"seamless_axes": list(axes)})
        return SeamlessModeOutput(unet=unet, vae=vae)


@invocation("freeu", title="Apply FreeU - SD1.5, SDXL", tags=["freeu"], category=_CATEGORY, version="1.0.2")
class FreeUInvocation(BaseInvocation):
    """Sets FreeU's backbone (b1, b2) and skip (s1, s2) scaling factors on the UNet.

    Values often used (b1/b2/s1/s2): SD1.5 1.2/1.4/0.9/0.2, SD2 1.1/1.2/0.9/0.2, SDXL 1.1/1.2/0.6/0.4.
    """

    unet: UNetField = InputField(description=UNET_DESCRIPTION, input=Input.Connection, title="UNet")
    b1: float = InputField(default=1.2, ge=-1, le=3, description=_FREEU_B1)
    b2: float = InputField(default=1.4, ge=-1, le=3, description=_FREEU_B2)
    s1: float = InputField(default=0.9, ge=-1, le=3, description=_FREEU_S1)
    s2: float = InputField(default=0.2, ge=-1, le=3, description=_FREEU_S2)

    def invoke(self, context: "InvocationContext") -> UNetOutput:
        config = FreeUConfig(s1=self.s1, s2=self.s2, b1=self.b1, b2=self.b2)
        return UNetOutput(unet=self.unet.model_copy(deep=True, update={"freeu_config": config}))


@invocation("clip_skip", title="Apply CLIP Skip - SD1.5, SDXL", tags=["clipskip", "clip", "skip"], category="prompt",
            version="1.1.1")
class CLIPSkipInvocation(BaseInvocation):
    """Skips the last `skipped_layers` layers of the CLIP text encoder. The count is added to the one the
    CLIP already carries, so two chained clip_skip nodes add up (as in InvokeAI)."""

    clip: CLIPField = InputField(description=CLIP_DESCRIPTION, input=Input.Connection, title="CLIP")
    skipped_layers: int = InputField(default=0, ge=0, description=_SKIPPED_LAYERS)

    def invoke(self, context: "InvocationContext") -> CLIPSkipInvocationOutput:
        total = self.clip.skipped_layers + self.skipped_layers
        return CLIPSkipInvocationOutput(clip=self.clip.model_copy(deep=True, update={"skipped_layers": total}))
