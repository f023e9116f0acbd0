"""Image names as InvokeAI makes them (``<uuid>.png``), unique in their tenant.

A run's image is named from its run and its slot in the run (``m3.decode-0.png``: item, node, count), through
a name-based UUID: the same slot of the same run gets the same name, so a retried task overwrites its first
try's image instead of adding one, and no two runs (or tenants) share a name. An upload gets a random one.
"""

from __future__ import annotations

import re
import uuid

IMAGE_NAME_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.png$"
_IMAGE_NAME = re.compile(IMAGE_NAME_PATTERN)
_NAMESPACE = uuid.UUID("5d0f6d1e-2c4b-4b8e-9a59-6f1c1b0e7a11")  # this provider's names; never change it


def run_image_name(run_prefix: str, slot: str) -> str:
    """The name of the image a run (``<tenant>/runs/<dag_id>/<run_id>``) saves in ``slot``: stable across
    retries, unique across runs and tenants."""
    return f"{uuid.uuid5(_NAMESPACE, f'{run_prefix}/{slot}')}.png"


def new_image_name() -> str:
    """A fresh name, as InvokeAI gives an uploaded image."""
    return f"{uuid.uuid4()}.png"


def is_image_name(value: object) -> bool:
    return isinstance(value, str) and bool(_IMAGE_NAME.match(value))
