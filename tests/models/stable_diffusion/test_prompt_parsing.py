"""`parse_prompt` returns what compel's ``Compel.parse_prompt_string`` returns, without pyparsing for plain prompts."""

from __future__ import annotations

import random
from typing import Any

import pytest

compel = pytest.importorskip("compel")

from compel import Compel
from compel.prompt_parser import Blend, Conjunction, CrossAttentionControlSubstitute, FlattenedPrompt, Fragment
from compel.prompt_parser import PromptParser

from invokeai_provider.models.stable_diffusion import prompt_parsing
from invokeai_provider.models.stable_diffusion.prompt_parsing import parse_prompt

ASTRONAUT = "a photograph of an astronaut riding a horse on the moon, highly detailed"


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    prompt_parsing._parse.cache_clear()


def structure(node: Any) -> Any:
    """Everything compel's objects carry (their ``__eq__`` ignores some of it, e.g. a weight's type)."""
    if isinstance(node, Conjunction):
        return ("Conjunction", [structure(p) for p in node.prompts], [(type(w).__name__, w) for w in node.weights],
                [(lora.model, lora.weight) for lora in node.lora_weights], node.type)
    if isinstance(node, FlattenedPrompt):
        return ("FlattenedPrompt", [structure(c) for c in node.children])
    if isinstance(node, Fragment):
        return ("Fragment", node.text, type(node.weight).__name__, node.weight)
    if isinstance(node, Blend):
        return ("Blend", [structure(p) for p in node.prompts], node.weights, node.normalize_weights)
    if isinstance(node, CrossAttentionControlSubstitute):
        return ("Swap", [structure(c) for c in node.original], [structure(c) for c in node.edited], node.options)
    return (type(node).__name__, repr(node))


def outcome(parse: Any, prompt: str) -> Any:
    try:
        result = parse(prompt)
    except Exception as exc:  # noqa: BLE001 - compel's parse errors must be raised the same way
        return ("error", type(exc).__name__)
    return (repr(result), structure(result))


WORDS = ["a", "cat", "close-up", "8k", "uhd", "1.5", "2", "-3", "hyper-realistic", "x.attend", "y.swap", "withLora",
         "useLora", "and", "Mr.", "e.g.", "café", "宇宙", "🚀", "Ωmega", "x", "1-2", "well-lit", "-lead", "x_y"]
# the pieces a random prompt is made of: mostly plain text, and sometimes compel syntax
PLAIN = list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789") + [" ", " ", " ", "  ", ",", ", ", ".", ". ", "-", "\n",
                                                                "\t", "\r\n", "\xa0", "\u3000", "é", "ß", "日", "🙂"]
SYNTAX = ["(", ")", '"', "+", "++", "--", "-", "=", "\\", "\\(", ".and()", ".blend(1, 2)", ".swap(dog)",
          ".attend(0.5)", "withLora(x,0.5)", "useLora(x)", "1.3", ")1.2", "\x0b", "\x0c"]


def random_prompt(rng: random.Random) -> str:
    with_syntax = rng.random() < 0.3
    pieces: list[str] = []
    for _ in range(rng.randint(0, 14)):
        roll = rng.random()
        if roll < 0.35:
            pieces.append(rng.choice(WORDS))
        elif with_syntax and roll < 0.5:
            pieces.append(rng.choice(SYNTAX))
        else:
            pieces.append(rng.choice(PLAIN))
    return "".join(pieces)


def test_random_prompts_parse_as_compel_parses_them(monkeypatch):
    """A few thousand prompts of letters, digits, whitespace, commas, periods, hyphens, unicode and (some)
    compel syntax: the same structure as compel's, or the same error. Most take the fast path."""
    reference = PromptParser()  # what Compel.parse_prompt_string builds on every call, built once here
    slow: list[str] = []

    def compel_parse(cls: type, prompt: str) -> Conjunction:
        slow.append(prompt)
        return reference.parse_conjunction(prompt)

    monkeypatch.setattr(Compel, "parse_prompt_string", classmethod(compel_parse))
    rng = random.Random(1234)
    prompts = [random_prompt(rng) for _ in range(2000)]
    prompts += [ASTRONAUT, "", " ", "\n", "\x0b", "\xa0", "a,b", ",,,", " , ", "a ,b", "a,\nb", "close--up", "a-",
                "a- b", "a-.", "a-5-", "-", "- a", "a -", "--a", "a.-b", "  lead  trail  ", "a\tb\n\nc\r d",
                "\xa0a\xa0 b", "a\x0bb", "a\u2028b", "a\x1cb", "(a)", "a+", "a=b", 'say "hi"']
    mismatches = [(p, want, got) for p in prompts
                  if (want := outcome(reference.parse_conjunction, p)) != (got := outcome(parse_prompt, p))]
    assert mismatches == []
    assert len(set(slow)) < 0.5 * len(set(prompts))  # most prompts took the fast path


def test_the_reference_parser_is_compel_parse_prompt_string():
    rng = random.Random(99)
    reference = PromptParser()
    for prompt in [ASTRONAUT, "a (red)++ cat", "(a, b).blend(1, 2)"] + [random_prompt(rng) for _ in range(20)]:
        assert outcome(reference.parse_conjunction, prompt) == outcome(Compel.parse_prompt_string, prompt)


@pytest.mark.parametrize("prompt", [ASTRONAUT, "close-up portrait, 8k, uhd. Highly detailed.\nsecond line",
                                    "  café  宇宙 🚀,stars ", "", "-leading hyphen, e.g. x.attend"])
def test_plain_prompts_never_reach_compel(monkeypatch, prompt):
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("compel's parser was used")

    monkeypatch.setattr(Compel, "parse_prompt_string", classmethod(refuse))
    monkeypatch.setattr(PromptParser, "__init__", refuse)
    conjunction = parse_prompt(prompt)
    assert len(conjunction.prompts) == 1 and len(conjunction.prompts[0].children) == 1
    assert conjunction.prompts[0].children[0].weight == 1.0


@pytest.fixture
def compel_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The prompts compel's parser is asked to parse from here on (it still parses them)."""
    calls: list[str] = []
    real = Compel.parse_prompt_string

    def counted(cls: type, text: str) -> Conjunction:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(Compel, "parse_prompt_string", classmethod(counted))
    return calls


@pytest.mark.parametrize("prompt", ["a (red)++ cat", "a cat-", 'a "cat"', "a+ cat", "a\\(b", "(a, b).and()",
                                    "withLora(x)", "cat.swap(dog)", "x=1"])
def test_prompts_with_syntax_go_to_compel(compel_calls, prompt):
    assert repr(parse_prompt(prompt)) == repr(Compel.parse_prompt_string(prompt))
    assert compel_calls == [prompt, prompt]  # ours, then the reference


def test_a_prompt_is_parsed_once_and_every_caller_gets_its_own_copy(compel_calls):
    first = parse_prompt("a (red)++ cat")
    first.prompts[0].children[0].text = "changed"
    first.weights.append(2.0)
    second = parse_prompt("a (red)++ cat")
    assert compel_calls == ["a (red)++ cat"]
    assert second is not first and structure(second) == structure(Compel.parse_prompt_string("a (red)++ cat"))
    plain = parse_prompt(ASTRONAUT)
    plain.prompts[0].children.clear()
    assert parse_prompt(ASTRONAUT).prompts[0].children[0].text == ASTRONAUT


def test_a_parse_error_is_compels_and_is_not_cached():
    with pytest.raises(Exception) as raised:
        Compel.parse_prompt_string("a\x0bb")
    with pytest.raises(type(raised.value)):
        parse_prompt("a\x0bb")
    assert prompt_parsing._parse.cache_info().currsize == 0
