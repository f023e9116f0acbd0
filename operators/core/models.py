"""Model identifiers as every model-taking family checks and splits them: the errors, the kind and installed
checks, and submodel identifiers. No nodes here; the SD loaders, the upscalers and the metadata getters use it.

Checks done when a node runs:
- the identifier's model type (and base, where InvokeAI's editor offers only some bases) must be the
  kind the field takes; InvokeAI filters this only in its editor, here a wrong kind is an error;
- with a ``models`` run service, the key must be installed (InvokeAI's ``context.models.exists``);
  without one the check is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from invokeai_provider.core.fields import CLIPField, ModelIdentifierField, UNetField
from invokeai_provider.core.invocation import BaseInvocation
from invokeai_provider.core.taxonomy import BaseModelType, ModelType, SubModelType
from invokeai_provider.errors import InvokeAIProviderError, field_error

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

# Name of the optional run service that knows which models are installed (it has `exists(key)`).
MODEL_SERVICE = "models"


# --- errors --------------------------------------------------------------------------------------------


class ModelInputError(InvokeAIProviderError):
    """A model identifier given to a node cannot be used there."""


class ModelNotInstalledError(ModelInputError):
    """The models service does not know the identifier's key."""


class WrongModelKindError(ModelInputError):
    """The identifier names a model of another type or base than the field takes."""


class LoRAAlreadyAppliedError(ModelInputError):
    """The LoRA is already in the `loras` list it would be appended to."""


# --- checks --------------------------------------------------------------------------------------------


def _value(member: Any) -> str:
    return member.value if hasattr(member, "value") else str(member)


def check_kind(node: BaseInvocation, field: str, model: ModelIdentifierField, model_type: ModelType,
               bases: Optional[Sequence[BaseModelType]] = None) -> None:
    """Raises WrongModelKindError unless ``model`` is of ``model_type`` and (when given) one of ``bases``."""
    if model.type != model_type:
        raise field_error(WrongModelKindError, node, field, f"expected a {model_type.value} model, got model "
                          f"{model.key!r} ({model.name}) of type {_value(model.type)}")
    if bases is not None and model.base not in bases:
        expected = " or ".join(base.value for base in bases)
        raise field_error(WrongModelKindError, node, field, f"expected a {model_type.value} model of base "
                          f"{expected}, got model {model.key!r} ({model.name}) of base {_value(model.base)}")


def check_installed(node: BaseInvocation, field: str, model: ModelIdentifierField,
                    context: "InvocationContext") -> None:
    """With a models service, raises ModelNotInstalledError when it does not have the key."""
    models = context.services.get(MODEL_SERVICE)
    if models is not None and not models.exists(model.key):
        raise field_error(ModelNotInstalledError, node, field, f"model key {model.key!r} is not installed")


def check_model(node: BaseInvocation, field: str, model: ModelIdentifierField, context: "InvocationContext",
                model_type: Optional[ModelType] = None, bases: Optional[Sequence[BaseModelType]] = None) -> None:
    """Raises a clear error naming the node and field when ``model`` is of the wrong kind or not installed."""
    if model_type is not None:
        check_kind(node, field, model, model_type, bases)
    check_installed(node, field, model, context)


# --- submodels -----------------------------------------------------------------------------------------


def submodel(model: ModelIdentifierField, part: SubModelType) -> ModelIdentifierField:
    """The same model identifier, pointed at one of its submodels."""
    return model.model_copy(update={"submodel_type": part})


def unet_of(model: ModelIdentifierField) -> UNetField:
    """A main model's UNet field (with its scheduler), no LoRAs yet."""
    return UNetField(unet=submodel(model, SubModelType.UNet), scheduler=submodel(model, SubModelType.Scheduler),
                     loras=[])


def clip_of(model: ModelIdentifierField, tokenizer: SubModelType = SubModelType.Tokenizer,
            text_encoder: SubModelType = SubModelType.TextEncoder) -> CLIPField:
    """A main model's CLIP field (first encoder by default), no LoRAs or skipped layers yet."""
    return CLIPField(tokenizer=submodel(model, tokenizer), text_encoder=submodel(model, text_encoder), loras=[],
                     skipped_layers=0)
