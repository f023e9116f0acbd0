"""The installed model a node uses where InvokeAI's node has no field for it and takes its starter model (Redux's
SigLIP, an IP-Adapter's CLIP vision encoder): the one under the starter's name, else the only one of its type.
InvokeAI downloads the starter when it is missing; here no hub may be reachable, so that is an error saying what to
install."""

from __future__ import annotations

from typing import Any, Iterable


def installed_starter(configs: Iterable[Any], model_type: Any, name: str, source: str, what: str,
                      error: type[Exception]) -> Any:
    """The record of ``model_type`` named ``name``, else the only one of that type; ``error`` (with ``what`` the
    model is for and ``source`` to install) when there is none or several without that name."""
    found = sorted((c for c in configs if c.type is model_type), key=lambda c: c.name)
    named = [c for c in found if c.name == name]
    if named:
        return named[0]
    if len(found) == 1:
        return found[0]
    kind = getattr(model_type, "value", model_type)
    if not found:
        raise error(f"{what}: no {kind} model is installed, and it cannot be downloaded here; install {source} as "
                    f"{name!r} (InvokeAI's name for it)")
    raise error(f"{what}: several {kind} models are installed ({', '.join(c.name for c in found)}) and none is named "
                f"{name!r}; install {source} under that name")
