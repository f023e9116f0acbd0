"""Helper models that nodes load by a fixed location, not by a registry record ("core" models).

InvokeAI downloads these (safety checker, depth, segmentation and detection models) from a hub on first
use. No hub is reachable here, so each one is a ``from_pretrained`` folder at a fixed path under the
model root, and a missing folder is an error naming the node, the field that chose the model and the
folder expected. Loaded models live in the run's model cache like any other, so they stay warm across
nodes (and across tasks in the GPU runtime).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from invokeai_provider.errors import InvokeAIProviderError, field_error

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext
    from invokeai_provider.core.invocation import BaseInvocation
    from invokeai_provider.models.model_manager.manager import ModelManager

# The folder under the model root that holds the core models (InvokeAI's ``models/core``).
CORE_DIR = "core"


class CoreModelError(InvokeAIProviderError):
    """A core model a node needs is not where it is expected, or the run has no model root to look in."""


class CoreModel:
    """A model with its processor(s) as one cache entry: sized by the model's weights and moved with it, so
    the cache's byte budgets and device offloading see the real model."""

    def __init__(self, model: Any, processor: Any = None, **parts: Any) -> None:
        self.model = model
        self.processor = processor
        self.parts = parts

    def parameters(self) -> Iterator[Any]:
        return self.model.parameters()

    def buffers(self) -> Iterator[Any]:
        return self.model.buffers()

    def to(self, device: Any) -> "CoreModel":
        self.model.to(device)
        return self

    @property
    def device(self) -> Any:
        return next(iter(self.model.parameters())).device


def core_model_root(node: "BaseInvocation", context: "InvocationContext", field: str) -> tuple["ModelManager", Path]:
    """The run's model manager and its local model root folder."""
    models: Optional["ModelManager"] = context.services.get("models")
    if models is None:
        raise field_error(CoreModelError, node, field, "no model service in this run; this node loads its model from the model root "
                                  "(run with --model-root)")
    try:
        root = models.registry.root
    except InvokeAIProviderError as exc:  # a remote (S3) model root has no local folder
        raise field_error(CoreModelError, node, field, f"this node needs a local model root: {exc}") from None
    return models, root


def core_model_folder(node: "BaseInvocation", context: "InvocationContext", field: str, relative: str, *,
                      what: str, required: tuple[str, ...] = ("config.json",)) -> tuple["ModelManager", Path]:
    """The folder ``relative`` to the model root, checked to hold ``required`` files; ``what`` names the
    model in the error (for example ``"a transformers DepthAnythingForDepthEstimation"``)."""
    models, root = core_model_root(node, context, field)
    path = root / relative
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        how = (", as save_pretrained writes it (config, weights and processor files)" if "config.json" in required
               else "")
        raise field_error(CoreModelError, node, field, f"no model at {path} (missing {', '.join(missing)}): put {what} there{how}")
    return models, path


@contextmanager
def use_core_model(node: "BaseInvocation", context: "InvocationContext", field: str, relative: str,
                   build: Callable[[Path, str], Any], *, what: str,
                   required: tuple[str, ...] = ("config.json",)) -> Iterator[Any]:
    """The model at ``<model root>/relative``, built once by ``build(folder, device)`` and held in the run's
    model cache; on the execution device for the duration of the block. The cache key names the required
    files too: one folder (``lllyasviel/Annotators``) holds several single-file models."""
    models, path = core_model_folder(node, context, field, relative, what=what, required=required)
    with models.cache.use(f"core:{path}:{'+'.join(required)}", lambda: build(path, models.device)) as model:
        yield model
