"""Old import path of :mod:`invokeai_provider.compiler.dag_factory`, kept so node packs and DAG files written against it work."""

import sys

from invokeai_provider.compiler import dag_factory as _module

sys.modules[__name__] = _module
