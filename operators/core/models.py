"""Model identifiers as every model-taking family checks and splits them: the errors, the kind and installed
checks, submodel identifiers and the LoRA lists the LoRA loaders append to. No nodes here; the SD and FLUX loaders,
the upscalers and the metadata getters use it.

Checks done when a node runs:
- the identifier's model type (and base, where InvokeAI's editor offers only some bases) must be the
  kind the field takes; InvokeAI filters this only in its editor, here a wrong kind is an error;
- with a ``models`` run service, the key must be installed (InvokeAI's ``context.models.exists``);
  without one the check is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

from invokeai_provider.core.fields import CLIPField, LoRAField, ModelIdentifierField, UNetField
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


# --- LoRA lists ----------------------------------------------------------------------------------------


def refuse_applied(node: BaseInvocation, targets: Iterable[tuple[str, Any]], lora: ModelIdentifierField) -> None:
    """Raises LoRAAlreadyAppliedError when ``lora`` is already in one of the targets' `loras` lists."""
    for field, target in targets:
        if target is not None and any(applied.lora.key == lora.key for applied in target.loras):
            raise field_error(LoRAAlreadyAppliedError, node, field,
                              f"LoRA {lora.key!r} ({lora.name}) is already applied to {field}")


def with_lora(target: Optional[Any], lora: LoRAField) -> Optional[Any]:
    """A deep copy of a UNet/CLIP field with ``lora`` appended to its `loras`; None stays None."""
    if target is None:
        return None
    patched = target.model_copy(deep=True)
    patched.loras.append(lora.model_copy(deep=True))
    return patched


def apply_lora_collection(node: BaseInvocation, loras: Optional[Union[LoRAField, list[LoRAField]]],
                          targets: dict[str, Optional[Any]], bases: Sequence[BaseModelType],
                          context: "InvocationContext") -> dict[str, Optional[Any]]:
    """Appends each LoRA of ``loras`` (one or a list) to every present target, in order.

    A key repeated inside the collection is applied once (the first occurrence wins), as InvokeAI does;
    a key already in a target's `loras` is refused.
    """
    items = loras if isinstance(loras, list) else [loras]
    output = {name: None if target is None else target.model_copy(deep=True) for name, target in targets.items()}
    seen: set[str] = set()
    for item in items:
        if item is None or item.lora.key in seen:
            continue
        check_model(node, "loras", item.lora, context, ModelType.LoRA, bases)
        refuse_applied(node, targets.items(), item.lora)
        seen.add(item.lora.key)
        for patched in output.values():
            if patched is not None:
                patched.loras.append(item.model_copy(deep=True))
    return output
