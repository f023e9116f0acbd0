"""Single-file "annotator" checkpoints (the ``lllyasviel/Annotators`` hub repository InvokeAI downloads them
from), loaded into networks written in this package.

Each checkpoint is a file in ``<model root>/core/lllyasviel/Annotators``: the ``.pth`` / ``.pt`` file named
as on the hub, or a ``.safetensors`` file of the same stem (preferred when both exist). ``.pth`` files are
read with ``weights_only=True``, so a checkpoint can hold tensors and plain containers but never code. A
file whose tensors don't fit the network fails naming the node, the field and the file. torch is imported
inside the functions only.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from invokeai_provider.errors import field_error
from invokeai_provider.models.model_manager.core_models import (
    CORE_DIR,
    CoreModel,
    CoreModelError,
    core_model_root,
    use_core_model,
)

if TYPE_CHECKING:
    import torch

    from invokeai_provider.core.context import InvocationContext
    from invokeai_provider.core.invocation import BaseInvocation

ANNOTATORS_REPO = "lllyasviel/Annotators"
ANNOTATORS_DIR = f"{CORE_DIR}/{ANNOTATORS_REPO}"


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a ``.safetensors`` file, or the (tensor-only) object pickled in a ``.pth`` file."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def strip_module_prefix(state_dict: Any) -> Any:
    """A checkpoint saved from torch's DataParallel prefixes every name with ``module.``."""
    if not isinstance(state_dict, dict):
        return state_dict
    return {k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k: v
            for k, v in state_dict.items()}


def load_strict(node: "BaseInvocation", field: str, net: "torch.nn.Module", state_dict: Any, path: Path) -> None:
    """``net.load_state_dict(state_dict, strict=True)``, with a mismatch reported as the node's error."""
    if not isinstance(state_dict, dict):
        raise field_error(CoreModelError, node, field, f"{path} holds a {type(state_dict).__name__}, not a state dict of tensors")
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict)
                   if tuple(getattr(state_dict[k], "shape", ())) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})"
                 for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("keys of another shape", wrong)) if keys]
        raise field_error(CoreModelError, node, field, f"{path} does not fit the {type(net).__name__} network: {'; '.join(parts)}")
    net.load_state_dict(state_dict, strict=True)


def _file_in(folder: Path, filename: str) -> Optional[str]:
    """``filename`` or its ``.safetensors`` twin, if either is in ``folder`` (the twin first)."""
    twin = Path(filename).with_suffix(".safetensors").name
    for name in (twin, filename):
        if (folder / name).is_file():
            return name
    return None


@contextmanager
def use_annotator(node: "BaseInvocation", context: "InvocationContext", field: str, filename: str,
                  make: Callable[[], "torch.nn.Module"], *, what: str,
                  unwrap: Callable[[Any], Any] = lambda checkpoint: checkpoint,
                  also_in: tuple[str, ...] = (), folder: str = ANNOTATORS_DIR) -> Iterator["torch.nn.Module"]:
    """The network ``make()`` with the weights of annotator checkpoint ``filename``, in eval mode on the
    execution device, held in the run's model cache.

    ``unwrap`` turns the loaded checkpoint into the state dict (some wrap it, or prefix its keys);
    ``also_in`` are other folders under the model root where InvokeAI's own download of the same file may lie,
    looked in when the Annotators folder has no such file. ``folder`` (relative to the model root) is where the
    file is looked for first: other single-file core models (the RealESRGAN upscalers) live elsewhere.
    """
    _, root = core_model_root(node, context, field)
    name = _file_in(root / folder, filename)
    for other in also_in if name is None else ():
        found = _file_in(root / other, filename)
        if found is not None:
            folder, name = other, found
            break

    def build(path: Path, device: str) -> CoreModel:
        file = path / (name or filename)
        try:
            checkpoint = read_state_dict(file)
        except Exception as exc:  # a truncated file, or a pickle with objects that weights_only refuses
            first_line = (str(exc).splitlines() or [""])[0]
            raise field_error(CoreModelError, node, field, f"cannot read {file} as a checkpoint of tensors: {type(exc).__name__}: "
                                      f"{first_line}") from None
        net = make()
        load_strict(node, field, net, unwrap(checkpoint), file)
        return CoreModel(net.eval().to(device))

    with use_core_model(node, context, field, folder, build, what=what, required=(name or filename,)) as core:
        yield core.model
