"""The node core: the invocation base class and decorators, field types, the node registry and aliases,
edge type compatibility, the invocation context nodes run with, the model taxonomy their fields use and the
node schema. Imports nothing else of the package but ``errors``, ``config`` and ``storage``.
"""
