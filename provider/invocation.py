"""Old import path of :mod:`invokeai_provider.core.invocation`, kept so node packs and DAG files written against it work."""

import sys

from invokeai_provider.core import invocation as _module

sys.modules[__name__] = _module
