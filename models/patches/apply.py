"""The LoRAs and textual-inversion embeddings that node fields name, loaded through the model service and
patched in for the span of one node.

``models`` is the run's model service (:class:`invokeai_provider.models.model_manager.manager.ModelManager`
or a stand-in with ``load``, ``find_embedding``). The patching itself is :mod:`.lora` and :mod:`.embeddings`;
they (and so torch and compel) are imported when a patch is applied.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

from invokeai_provider.core.fields import ModelIdentifierField
from invokeai_provider.core.taxonomy import BaseModelType

__all__ = ["lora_weights", "loras_applied", "prompt_embeddings"]


def lora_weights(models: Any, loras: list[Any]) -> list[tuple[Any, float]]:
    """(tensors, weight) of each LoRA of a UNet or CLIP field's ``loras``, loaded through the model cache."""
    weights = []
    for lora in loras:
        with models.load(lora.lora) as tensors:
            weights.append((tensors, lora.weight))
    return weights


@contextmanager
def loras_applied(models: Any, model: Any, loras: list[Any], target: str, base: BaseModelType) -> Iterator[None]:
    """``model`` (the ``target`` part of a ``base`` model) with the field's LoRAs applied for the block; the cached
    weights are restored afterwards. A LoRA that does not fit raises ``lora.LoraKeyError``."""
    from invokeai_provider.models.patches.lora import apply_loras

    with apply_loras(model, lora_weights(models, loras), target=target, base=base.value):
        yield


@contextmanager
def prompt_embeddings(models: Any, prompt: str, tokenizer: Any, text_encoder: Any, base: BaseModelType,
                      target: Optional[str]) -> Iterator[tuple[Any, Any]]:
    """The tokenizer (and compel's manager) knowing the prompt's ``<embedding>`` triggers, for the block.

    ``target`` is the SDXL half (``clip_l`` or ``clip_g``), None for other bases. Without installed embeddings
    for the prompt's triggers it yields ``(tokenizer, None)``.
    """
    from invokeai_provider.models.patches.embeddings import (
        apply_embeddings,
        embedding_vectors,
        trigger_names_in,
    )

    vectors = {}
    for name in trigger_names_in(prompt):
        config = models.find_embedding(name, base)
        if config is None:
            continue  # as in InvokeAI: an unknown <name> stays plain text
        with models.load(ModelIdentifierField.model_validate(config.identifier())) as state_dict:
            vectors[name] = embedding_vectors(state_dict, target)
    if not vectors:
        yield tokenizer, None
        return
    with apply_embeddings(tokenizer, text_encoder, vectors) as (patched_tokenizer, manager):
        yield patched_tokenizer, manager
