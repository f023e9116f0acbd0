"""String nodes: declarations match InvokeAI, and each node computes what InvokeAI computes."""

from __future__ import annotations

import pytest

from helpers import edge, only_output, run_nodes

from invokeai_provider.core.registry import InvocationRegistry


def single(run, **node):
    return only_output(run, node)


DECLARED = {
    "string_join": ("StringJoinInvocation", "String Join", "string_output", ["string_left", "string_right"]),
    "string_join_three": ("StringJoinThreeInvocation", "String Join Three", "string_output",
                          ["string_left", "string_middle", "string_right"]),
    "string_replace": ("StringReplaceInvocation", "String Replace", "string_output",
                       ["string", "search_string", "replace_string", "use_regex"]),
    "string_split": ("StringSplitInvocation", "String Split", "string_2_output", ["string", "delimiter"]),
    "string_split_neg": ("StringSplitNegInvocation", "String Split Negative", "string_pos_neg_output", ["string"]),
}


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_declarations_match_invokeai(node_type):
    cls = InvocationRegistry.get_invocation_class(node_type)
    class_name, title, output_type, fields = DECLARED[node_type]
    assert cls.__name__ == class_name
    assert cls.UIConfig.title == title
    assert cls.UIConfig.version == "1.0.1"
    assert cls.UIConfig.category == "strings"
    assert cls.UIConfig.classification.value == "stable"
    assert cls.get_output_annotation().get_type() == output_type
    assert list(cls.input_fields()) == fields
    # Every string node input has a default: none is required.
    assert not any(info.json_schema_extra["orig_required"] for info in cls.input_fields().values())


def test_output_fields():
    pos_neg = InvocationRegistry.get_output_class("string_pos_neg_output")
    assert set(pos_neg.model_fields) == {"type", "positive_string", "negative_string"}
    two = InvocationRegistry.get_output_class("string_2_output")
    assert set(two.model_fields) == {"type", "string_1", "string_2"}


def test_join_and_join_three(run):
    assert single(run, type="string_join", string_left="a cat ", string_right="on a mat").value == "a cat on a mat"
    assert single(run, type="string_join").value == ""
    assert single(run, type="string_join_three", string_left="x", string_middle="-",
                  string_right="y").value == "x-y"


def test_join_takes_values_from_edges(run):
    state = run_nodes(run, {
        "a": {"type": "string", "value": "left"},
        "b": {"type": "string_join", "string_right": "+right"},
    }, [edge("a", "value", "b", "string_left")])
    assert state.outputs_of("b")[0].value == "left+right"


@pytest.mark.parametrize("string, delimiter, first, second", [
    ("key=value=more", "=", "key", "value=more"),
    ("no delimiter here", ",", "no delimiter here", ""),
    ("a, b, c", ", ", "a", "b, c"),
    ("", ",", "", ""),
    # Blank delimiter: split on the first whitespace run, as the field description says.
    ("first rest of it", "", "first", "rest of it"),
    ("single", "", "single", ""),
    ("", "", "", ""),
])
def test_split(run, string, delimiter, first, second):
    out = single(run, type="string_split", string=string, delimiter=delimiter)
    assert (out.string_1, out.string_2) == (first, second)


@pytest.mark.parametrize("text, positive, negative", [
    ("a cat [blurry] on a mat", "a cat  on a mat", " blurry"),
    ("[ugly][bad hands]nice", "nice", " ugly bad hands"),
    # Nested brackets stay negative; each "[" adds one space, "]" adds nothing.
    ("x [a [b] c] y", "x  y", " a  b c"),
    # An escaped bracket is kept as text (with its backslash) on the positive side.
    (r"a \[not negative\] b", r"a \[not negative\] b", ""),
    ("no brackets", "no brackets", ""),
    ("", "", ""),
])
def test_split_negative(run, text, positive, negative):
    out = single(run, type="string_split_neg", string=text)
    assert out.positive_string == positive
    assert out.negative_string == negative


def test_split_negative_stray_closing_bracket_goes_below_zero(run):
    # A stray "]" makes the depth negative, so the following "[...]" is still counted from -1: its
    # content lands on the positive side.
    out = single(run, type="string_split_neg", string="a] b [c] d")
    assert out.positive_string == "a b c d"
    assert out.negative_string == " "


@pytest.mark.parametrize("fields, expected", [
    ({"string": "A cat and a CAT", "search_string": "cat", "replace_string": "dog"}, "A dog and a dog"),
    ({"string": "price: 1.5 (approx)", "search_string": "1.5 (approx)", "replace_string": "2"}, "price: 2"),
    ({"string": "a1 b22 c333", "search_string": r"\d+", "replace_string": "#", "use_regex": True}, "a# b# c#"),
    ({"string": "Cat cat", "search_string": "cat", "replace_string": "dog", "use_regex": True}, "Cat dog"),
    ({"string": "john smith", "search_string": r"(\w+) (\w+)", "replace_string": r"\2 \1", "use_regex": True},
     "smith john"),
    ({"string": "unchanged", "search_string": "", "replace_string": "x"}, "unchanged"),
    ({"string": "remove me please", "search_string": " me", "replace_string": ""}, "remove please"),
])
def test_replace(run, fields, expected):
    assert single(run, type="string_replace", **fields).value == expected
