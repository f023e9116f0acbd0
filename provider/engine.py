"""Old import path of :mod:`invokeai_provider.graph.engine`, kept so node packs and DAG files written against it work."""

import sys

from invokeai_provider.graph import engine as _module

sys.modules[__name__] = _module
