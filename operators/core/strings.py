"""String nodes: join, split, replace, and the positive/negative split on square brackets.

Type strings, versions, fields and outputs follow InvokeAI's `invocations/strings.py`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.operators.core.primitives import StringOutput

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "strings"
_TEXTAREA = "textarea"


@invocation_output("string_pos_neg_output")
class StringPosNegOutput(BaseInvocationOutput):
    """A positive and a negative string."""

    positive_string: str = OutputField(description="Positive string")
    negative_string: str = OutputField(description="Negative string")


@invocation_output("string_2_output")
class String2Output(BaseInvocationOutput):
    """Two strings."""

    string_1: str = OutputField(description="string 1")
    string_2: str = OutputField(description="string 2")


def split_positive_negative(text: str) -> tuple[str, str]:
    """Splits a prompt on square brackets: bracketed text is negative, the rest positive.

    Mirrors InvokeAI exactly: each unescaped ``[`` adds one space to the negative string, an unescaped
    ``]`` closes a level and is dropped, and a backslash escapes the next bracket (the backslash itself
    is kept). Nesting is counted, and a stray ``]`` makes the depth negative.
    """
    positive: list[str] = []
    negative: list[str] = []
    depth = 0
    escaped = False
    for char in text:
        if char == "[" and not escaped:
            negative.append(" ")
            depth += 1
        elif char == "]" and not escaped:
            depth -= 1
            char = " "
        elif depth > 0:
            negative.append(char)
        else:
            positive.append(char)
        # A backslash escapes the next character, unless it is itself escaped.
        escaped = char == "\\" and not escaped
    return "".join(positive), "".join(negative)


@invocation("string_split_neg", title="String Split Negative", tags=["string", "split", "negative"],
            category=_CATEGORY, version="1.0.1")
class StringSplitNegInvocation(BaseInvocation):
    """Splits a string in two: text inside [] goes to the negative string, everything else to the positive
    string. Each opening bracket becomes a space in the negative string."""

    string: str = InputField(default="", description="String to split", ui_component=_TEXTAREA)

    def invoke(self, context: "InvocationContext") -> StringPosNegOutput:
        positive, negative = split_positive_negative(self.string or "")
        return StringPosNegOutput(positive_string=positive, negative_string=negative)


@invocation("string_split", title="String Split", tags=["string", "split"], category=_CATEGORY, version="1.0.1")
class StringSplitInvocation(BaseInvocation):
    """Splits a string in two at the first occurrence of the delimiter, which is removed."""

    string: str = InputField(default="", description="String to split", ui_component=_TEXTAREA)
    delimiter: str = InputField(default="", description="Delimiter to spilt with. blank will split on the first whitespace")

    def invoke(self, context: "InvocationContext") -> String2Output:
        text = self.string or ""
        # A blank delimiter splits on the first run of whitespace, as the field description promises
        # (InvokeAI passes "" to str.split, which raises "empty separator").
        parts = text.split(self.delimiter, 1) if self.delimiter else text.split(None, 1)
        first = parts[0] if parts else ""
        second = parts[1] if len(parts) == 2 else ""
        return String2Output(string_1=first, string_2=second)


@invocation("string_join", title="String Join", tags=["string", "join"], category=_CATEGORY, version="1.0.1")
class StringJoinInvocation(BaseInvocation):
    """Concatenates the left and right strings."""

    string_left: str = InputField(default="", description="String Left", ui_component=_TEXTAREA)
    string_right: str = InputField(default="", description="String Right", ui_component=_TEXTAREA)

    def invoke(self, context: "InvocationContext") -> StringOutput:
        return StringOutput(value=(self.string_left or "") + (self.string_right or ""))


@invocation("string_join_three", title="String Join Three", tags=["string", "join"], category=_CATEGORY,
            version="1.0.1")
class StringJoinThreeInvocation(BaseInvocation):
    """Concatenates the left, middle and right strings."""

    string_left: str = InputField(default="", description="String Left", ui_component=_TEXTAREA)
    string_middle: str = InputField(default="", description="String Middle", ui_component=_TEXTAREA)
    string_right: str = InputField(default="", description="String Right", ui_component=_TEXTAREA)

    def invoke(self, context: "InvocationContext") -> StringOutput:
        return StringOutput(value=(self.string_left or "") + (self.string_middle or "") + (self.string_right or ""))


@invocation("string_replace", title="String Replace", tags=["string", "replace", "regex"], category=_CATEGORY,
            version="1.0.1")
class StringReplaceInvocation(BaseInvocation):
    """Replaces every match of the search string with the replace string (plain search ignores case)."""

    string: str = InputField(default="", description="String to work on", ui_component=_TEXTAREA)
    search_string: str = InputField(default="", description="String to search for", ui_component=_TEXTAREA)
    replace_string: str = InputField(default="", description="String to replace the search", ui_component=_TEXTAREA)
    use_regex: bool = InputField(default=False,
                                 description="Use search string as a regex expression (non regex is case insensitive)")

    def invoke(self, context: "InvocationContext") -> StringOutput:
        text = self.string or ""
        search = self.search_string or ""
        if not search:
            return StringOutput(value=text)
        pattern = search if self.use_regex else "(?i)" + re.escape(search)
        # As in InvokeAI, the replacement is a regex template in both modes (backslash groups expand).
        return StringOutput(value=re.sub(pattern, self.replace_string or "", text))
