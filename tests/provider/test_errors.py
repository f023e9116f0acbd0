"""Which errors are about a run's input (failed for good) and which may recover (retried)."""

from __future__ import annotations

import pytest

from invokeai_provider.errors import (
    ArtifactStoreUnavailableError,
    BatchZippedLengthError,
    CanceledError,
    InvokeAIProviderError,
    NodeExecutionError,
    UnknownNodeTypeError,
    is_input_error,
)


class _FieldError(InvokeAIProviderError):
    """Stands for a node's own input error (image, model, tile errors name their field)."""


@pytest.mark.parametrize("error, expected", [
    (BatchZippedLengthError("zipped batch items must all have the same length"), True),
    (UnknownNodeTypeError('unknown node type "x"'), True),
    (_FieldError("node n (img_resize): field width: expected at least 1", node_id="n", field="width"), True),
    (NodeExecutionError("n", "img_resize", "n", _FieldError("bad", node_id="n", field="width")), True),
    (NodeExecutionError("n", "denoise_latents", "n", RuntimeError("CUDA out of memory")), False),
    (ArtifactStoreUnavailableError("s3 kept answering SlowDown"), False),
    (CanceledError("run canceled"), False),
    (RuntimeError("anything else"), False),
])
def test_input_errors_are_told_from_errors_that_may_recover(error, expected):
    assert is_input_error(error) is expected


def test_a_node_failure_from_the_gpu_runtime_is_still_an_input_error():
    """The runtime sends the node id and field, not the cause: the field the failure carries is what tells."""
    from invokeai_provider.execution.runtime.protocol import error_message, remote_error

    error = NodeExecutionError("n", "img_resize", "n", _FieldError("bad", node_id="n", field="width"))
    assert error.field == "width"
    rebuilt = remote_error(error_message(error))
    assert type(rebuilt) is NodeExecutionError and is_input_error(rebuilt)
    assert not is_input_error(remote_error(error_message(
        NodeExecutionError("n", "denoise_latents", "n", RuntimeError("CUDA out of memory")))))
