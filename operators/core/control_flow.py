"""Graph-level control nodes: iterate, collect and if. The engine gives them their semantics (§2.3);
their invoke() bodies only shape the output."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Input,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext


@invocation_output("iterate_output")
class IterateInvocationOutput(BaseInvocationOutput):
    """Used to connect iteration outputs. Will be expanded to a specific output."""

    item: Any = OutputField(description="The item being iterated over", title="Collection Item")
    index: int = OutputField(description="The index of the item", title="Index")
    total: int = OutputField(description="The total number of items", title="Total")


@invocation("iterate", title="Iterate", version="1.1.0", use_cache=False)
class IterateInvocation(BaseInvocation):
    """Iterates over a list of items"""

    collection: list[Any] = InputField(default=[], description="The list of items to iterate over")
    index: int = InputField(default=0, description="The index, will be provided on executed iterators", ui_hidden=True)

    def invoke(self, context: "InvocationContext") -> IterateInvocationOutput:
        return IterateInvocationOutput(item=self.collection[self.index], index=self.index, total=len(self.collection))


@invocation_output("collect_output")
class CollectInvocationOutput(BaseInvocationOutput):
    collection: list[Any] = OutputField(description="The collection of input items", title="Collection")


@invocation("collect", title="Collect", version="1.1.0", use_cache=False)
class CollectInvocation(BaseInvocation):
    """Collects values into a collection"""

    item: Optional[Any] = InputField(default=None, description="The item to collect (all inputs must be of the same type)",
                                     input=Input.Connection, title="Collection Item")
    collection: list[Any] = InputField(default=[], description="An optional collection to append to",
                                       input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> CollectInvocationOutput:
        return CollectInvocationOutput(collection=list(self.collection))


@invocation_output("if_output")
class IfInvocationOutput(BaseInvocationOutput):
    value: Optional[Any] = OutputField(default=None, description="The selected value", title="Output")


@invocation("if", title="If", tags=["logic", "conditional"], category="math", version="1.0.0")
class IfInvocation(BaseInvocation):
    """Selects between two optional inputs based on a boolean condition. Only the selected branch runs."""

    condition: bool = InputField(default=False, description="The condition used to select an input", title="Condition")
    true_input: Optional[Any] = InputField(default=None, description="Selected when the condition is true",
                                           title="True Input")
    false_input: Optional[Any] = InputField(default=None, description="Selected when the condition is false",
                                            title="False Input")

    def invoke(self, context: "InvocationContext") -> IfInvocationOutput:
        return IfInvocationOutput(value=self.true_input if self.condition else self.false_input)
