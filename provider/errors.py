"""Errors with InvokeAI's names. Each one says which node and field is wrong and what was expected."""

from __future__ import annotations

from typing import Optional, Protocol, TypeVar


class InvokeAIProviderError(Exception):
    """Base of every error this package raises on purpose."""

    def __init__(self, message: str, *, node_id: Optional[str] = None, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.field = field


def exception_summary(exc: BaseException) -> str:
    """``Type: first line of the message`` of a library's exception, for an error that wraps it in one line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


_E = TypeVar("_E", bound=InvokeAIProviderError)


class _Node(Protocol):
    id: str

    def get_type(self) -> str: ...


def field_error(error: type[_E], node: _Node, field: str, problem: str) -> _E:
    """``error`` about a node's input: ``node <id> (<type>): field <field>: <problem>``, with the node and field
    set on it, the one shape of every node-input error."""
    return error(f"node {node.id} ({node.get_type()}): field {field}: {problem}", node_id=node.id, field=field)


class InvalidNodeDefinitionError(InvokeAIProviderError):
    """A node class is declared wrongly (bad type string, version, missing invoke)."""


# --- parsing and validation (reference §2.2) -------------------------------------------------------


class GraphParseError(InvokeAIProviderError):
    """The document is not JSON, or not shaped like a graph, workflow or batch."""


class UnknownNodeTypeError(InvokeAIProviderError):
    """A node's `type` is not registered."""


class NodeValidationError(InvokeAIProviderError):
    """A node's literal values do not fit its fields (unknown field, wrong type, out of range)."""


class DuplicateNodeIdError(InvokeAIProviderError):
    pass


class NodeIdMismatchError(InvokeAIProviderError):
    pass


class NodeNotFoundError(InvokeAIProviderError):
    pass


class NodeFieldNotFoundError(InvokeAIProviderError):
    pass


class CyclicalGraphError(InvokeAIProviderError):
    pass


class InvalidEdgeError(InvokeAIProviderError):
    pass


class WorkflowError(InvokeAIProviderError):
    """A saved workflow cannot be turned into a graph."""


# --- batches (reference §2.5) -----------------------------------------------------------------------


class BatchValidationError(InvokeAIProviderError):
    pass


class BatchZippedLengthError(BatchValidationError):
    pass


class BatchItemsTypeError(BatchValidationError):
    pass


class BatchDuplicateNodeFieldError(BatchValidationError):
    pass


class RunConfError(InvokeAIProviderError):
    """A run's conf names keys that are none of the DAG's Params (Airflow itself accepts any key)."""


# --- execution --------------------------------------------------------------------------------------


class MissingInputError(InvokeAIProviderError):
    """A required input got neither a value nor an edge (InvokeAI's MissingInputException)."""

    def __init__(self, node_id: str, node_type: str, field: str) -> None:
        super().__init__(
            f"Node {node_id} ({node_type}) missing value or connection for field {field}", node_id=node_id, field=field
        )


class RequiredConnectionError(InvokeAIProviderError):
    """A required connection-only input has no edge (InvokeAI's RequiredConnectionException)."""

    def __init__(self, node_id: str, node_type: str, field: str) -> None:
        super().__init__(f"Node {node_id} ({node_type}) missing connections for field {field}", node_id=node_id, field=field)


class NodeInputError(InvokeAIProviderError):
    """A value arriving on an edge does not fit the destination field."""


class NodeExecutionError(InvokeAIProviderError):
    """A node raised while running; wraps the cause and names the node."""

    def __init__(self, node_id: str, node_type: str, exec_id: str, cause: BaseException) -> None:
        super().__init__(
            f"Node {node_id} ({node_type}) failed: {type(cause).__name__}: {cause}", node_id=node_id,
            field=getattr(cause, "field", None),  # a node's own input error names its field
        )
        self.node_type = node_type
        self.exec_id = exec_id
        self.cause = cause


class CanceledError(InvokeAIProviderError):
    """The run was canceled; raised between nodes or at the next progress check inside one."""


class ArtifactNotFoundError(InvokeAIProviderError):
    """An image, tensor or conditioning name does not exist in the artifact store."""


class InvalidArtifactKeyError(InvokeAIProviderError):
    """A name or prefix that would escape its place in the store."""


class ArtifactStoreUnavailableError(InvokeAIProviderError):
    """The artifact store kept failing transiently (unreachable, 5xx, SlowDown) for its whole retry window."""


# Errors about what a run was given (the document, a batch, a field's value), whatever their field.
_INPUT_ERRORS: tuple[type[InvokeAIProviderError], ...] = (
    GraphParseError, UnknownNodeTypeError, NodeValidationError, DuplicateNodeIdError, NodeIdMismatchError,
    NodeNotFoundError, NodeFieldNotFoundError, CyclicalGraphError, InvalidEdgeError, WorkflowError,
    BatchValidationError, RunConfError, MissingInputError, RequiredConnectionError, NodeInputError, InvalidArtifactKeyError,
)


def is_input_error(exc: BaseException) -> bool:
    """Whether ``exc`` is about what the run was given (a graph, a batch, a node field's value), so that the same
    input fails the same way again: a task failing with it is failed for good, not retried. Errors that name a
    field are input errors; a node failure is one when its cause is."""
    if isinstance(exc, NodeExecutionError):
        cause = getattr(exc, "cause", None)  # absent on an error rebuilt from the GPU runtime's message
        return exc.field is not None or (cause is not None and is_input_error(cause))
    return isinstance(exc, _INPUT_ERRORS) or (isinstance(exc, InvokeAIProviderError) and exc.field is not None)
