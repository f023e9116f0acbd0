"""Batch expansion (reference §2.5, scenario 11): zipped groups, product across groups, runs."""

from __future__ import annotations

import pytest
from helpers import graph, node

from invokeai_provider.graph.batch import Batch, expand_batch
from invokeai_provider.errors import (
    BatchDuplicateNodeFieldError,
    BatchItemsTypeError,
    BatchValidationError,
    BatchZippedLengthError,
    NodeFieldNotFoundError,
    NodeNotFoundError,
)
from invokeai_provider.graph.graph import Graph


@pytest.fixture
def four_prompts() -> Graph:
    return Graph.from_dict(graph(*(node(str(i), "test_prompt", prompt=f"p{i}") for i in range(1, 5))))


def datum(node_path: str, items: list, field_name: str = "prompt") -> dict:
    return {"node_path": node_path, "field_name": field_name, "items": items}


def test_zip_product_and_runs_in_invokeai_order(four_prompts):
    batch = Batch(data=[[datum("1", ["a", "b"]), datum("2", ["c", "d"])], [datum("3", ["e", "f"])]], runs=2)
    sessions, requested = expand_batch(four_prompts, batch)
    assert requested == batch.session_count() == 8
    got = [tuple(g.nodes[n].prompt for n in ("1", "2", "3")) for g in sessions]
    once = [("a", "c", "e"), ("a", "c", "f"), ("b", "d", "e"), ("b", "d", "f")]
    assert got == once * 2
    assert {g.nodes["4"].prompt for g in sessions} == {"p4"}  # untouched


def test_maximum_truncates_but_reports_the_request(four_prompts):
    batch = Batch(data=[[datum("1", ["a", "b", "c"])], [datum("2", ["x", "y"])]], runs=3)
    sessions, requested = expand_batch(four_prompts, batch, maximum=4)
    assert len(sessions) == 4 and requested == 18


def test_session_count_does_not_build_the_product():
    huge = Batch(data=[[datum("1", list(range(1000)))], [datum("2", list(range(1000)))], [datum("3", list(range(1000)))]],
                 runs=5)
    assert huge.session_count() == 5 * 10**9


def test_zipped_lengths_must_match():
    with pytest.raises(BatchZippedLengthError, match=r"1.prompt=2, 2.prompt=3"):
        Batch(data=[[datum("1", ["a", "b"]), datum("2", ["c", "d", "e"])]])


def test_an_empty_list_is_refused_naming_its_node_and_field():
    """An empty list would make a run of no sessions that looks like a success."""
    with pytest.raises(BatchValidationError, match=r"batch data for 2.prompt has no items") as caught:
        Batch(data=[[datum("1", ["a"])], [datum("2", [])]])
    assert (caught.value.node_id, caught.value.field) == ("2", "prompt")


def test_items_must_share_a_type_but_numbers_mix():
    Batch(data=[[datum("1", [1, 2.5, 3], field_name="value")]])
    with pytest.raises(BatchItemsTypeError, match="first is str, found int"):
        Batch(data=[[datum("1", ["a", 1])]])


def test_each_node_field_appears_once():
    with pytest.raises(BatchDuplicateNodeFieldError, match="sets 1.prompt more than once"):
        Batch(data=[[datum("1", ["a"])], [datum("1", ["b"])]])


def test_batch_nodes_and_fields_must_exist(four_prompts):
    with pytest.raises(NodeNotFoundError, match="names node 9"):
        expand_batch(four_prompts, Batch(data=[[datum("9", ["a"])]]))
    with pytest.raises(NodeFieldNotFoundError, match="names field 'style'"):
        expand_batch(four_prompts, Batch(data=[[datum("1", ["a"], field_name="style")]]))


def test_image_items_are_substituted_as_image_fields():
    g = Graph.from_dict(graph(node("img", "image")))
    batch = Batch(data=[[datum("img", [{"image_name": "a.png"}, {"image_name": "b.png"}], field_name="image")]])
    sessions, _ = expand_batch(g, batch)
    assert [s.nodes["img"].image.image_name for s in sessions] == ["a.png", "b.png"]
