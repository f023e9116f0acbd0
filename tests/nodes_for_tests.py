"""Tiny nodes used only by the engine tests (their type strings start with ``test_``)."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Input,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)


@invocation_output("test_prompt_output")
class PromptTestOutput(BaseInvocationOutput):
    prompt: str = OutputField(description="the prompt")


@invocation("test_prompt", version="1.0.0")
class PromptTestInvocation(BaseInvocation):
    """Passes a prompt through."""

    prompt: str = InputField(default="", description="a prompt")

    def invoke(self, context: Any) -> PromptTestOutput:
        return PromptTestOutput(prompt=self.prompt)


@invocation_output("test_value_output")
class ValueTestOutput(BaseInvocationOutput):
    value: Any = OutputField(description="the value")


@invocation("test_counted", version="1.0.0")
class CountedInvocation(BaseInvocation):
    """Passes a value through and records every call, so tests can see what ran and in which order."""

    calls: ClassVar[list[tuple[str, Any]]] = []
    value: Optional[Any] = InputField(default=None, description="any value")

    def invoke(self, context: Any) -> ValueTestOutput:
        type(self).calls.append((context.exec_id, self.value))
        return ValueTestOutput(value=self.value)


@invocation("test_needs_connection", version="1.0.0")
class NeedsConnectionInvocation(BaseInvocation):
    """Has a required connection-only input, for the required-input scenario."""

    value: int = InputField(description="must come from an edge", input=Input.Connection)

    def invoke(self, context: Any) -> ValueTestOutput:
        return ValueTestOutput(value=self.value)


@invocation("test_error", version="1.0.0")
class ErrorInvocation(BaseInvocation):
    """Always fails."""

    value: Optional[Any] = InputField(default=None, description="ignored")

    def invoke(self, context: Any) -> ValueTestOutput:
        raise RuntimeError("this node always fails")


@invocation_output("test_string_list_output")
class StringListTestOutput(BaseInvocationOutput):
    collection: list[str] = OutputField(description="strings")


@invocation("test_string_list", version="1.0.0")
class StringListInvocation(BaseInvocation):
    """Takes a list of strings (a typed list input for collector validation)."""

    collection: list[str] = InputField(default=[], description="strings")

    def invoke(self, context: Any) -> StringListTestOutput:
        return StringListTestOutput(collection=self.collection)


@invocation_output("test_bool_output")
class BoolTestOutput(BaseInvocationOutput):
    value: bool = OutputField(description="the result")


@invocation("test_is_zero", version="1.0.0")
class IsZeroInvocation(BaseInvocation):
    """True when the input is zero (a computed condition for if nodes)."""

    value: int = InputField(default=0, description="a number")

    def invoke(self, context: Any) -> BoolTestOutput:
        return BoolTestOutput(value=self.value == 0)


@invocation_output("test_int_list_output")
class IntListTestOutput(BaseInvocationOutput):
    collection: list[int] = OutputField(description="the integers")


@invocation("test_int_list", version="1.0.0")
class IntListInvocation(BaseInvocation):
    """``count`` consecutive integers from ``start``; count 0 gives an empty list (range refuses that)."""

    start: int = InputField(default=0, description="first value")
    count: int = InputField(default=0, description="how many")

    def invoke(self, context: Any) -> IntListTestOutput:
        return IntListTestOutput(collection=[self.start + k for k in range(self.count)])


@invocation("test_blocking_step", version="1.0.0", gpu=True)
class BlockingStepInvocation(BaseInvocation):
    """A GPU-queue node stuck in one long step that never checks for cancel (as a library call can be):
    what the runtime must abandon. It sleeps rather than spins, so the machine stays free for the others."""

    seconds: float = InputField(default=30.0, description="how long the step takes")

    def invoke(self, context: Any) -> ValueTestOutput:
        import time

        context.util.signal_progress("blocking step started")
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return ValueTestOutput(value=self.seconds)
