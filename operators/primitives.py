"""Old import path of :mod:`invokeai_provider.operators.core.primitives`, kept so node packs and DAG files written against it work."""

import sys

from invokeai_provider.operators.core import primitives as _module

sys.modules[__name__] = _module
