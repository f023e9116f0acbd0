"""What the SD generation nodes (prompts, denoise, vae, masks, ideal_size) share: their error, the model
service they load through, LoRA patching that names the node on failure, and common field descriptions.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from invokeai_provider.core.invocation import BaseInvocation
from invokeai_provider.core.taxonomy import BaseModelType
from invokeai_provider.errors import InvokeAIProviderError, field_error
from invokeai_provider.operators.core.models import MODEL_SERVICE

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

# Field descriptions as InvokeAI's FieldDescriptions words them.
LATENTS_DESCRIPTION = "Latents tensor"
TILED_DESCRIPTION = "Processing using overlapping tiles (reduce memory consumption)"
FP32_DESCRIPTION = "Whether or not to use full float32 precision"


class GenerationError(InvokeAIProviderError):
    """A generation node cannot run with what it was given; the message names the node and field."""


def model_service(node: BaseInvocation, context: "InvocationContext", field: str) -> Any:
    """The run's model service; a GenerationError naming the node and field when the run has none."""
    models = context.services.get(MODEL_SERVICE)
    if models is None:
        raise field_error(GenerationError, node, field, "no model service in this run; run with a model root "
                          "(invokeai-airflow graph run --model-root ...)")
    return models


@contextmanager
def lora_patched(node: BaseInvocation, context: "InvocationContext", field: str, model: Any, loras: list[Any],
                 target: str, base: BaseModelType) -> Iterator[None]:
    """The model with the field's LoRAs applied for the block; the cached weights are restored afterwards.
    A LoRA that does not fit the model is a GenerationError naming the node and field."""
    if not loras:
        yield
        return
    from invokeai_provider.models.patches.apply import loras_applied
    from invokeai_provider.models.patches.lora import LoraKeyError

    try:
        with loras_applied(model_service(node, context, field), model, loras, target, base):
            yield
    except LoraKeyError as exc:
        raise field_error(GenerationError, node, field, str(exc)) from None
