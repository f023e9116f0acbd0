"""compel's prompt parsing, fast for plain prompts and memoised.

``Compel.parse_prompt_string`` builds a pyparsing grammar and parses the prompt with it, tens of milliseconds
for an ordinary 70-character prompt. `parse_prompt` returns exactly what it returns (the same ``Conjunction``
structure, texts and weights), but a prompt without compel syntax is parsed directly: compel turns such a
prompt into one ``Fragment`` of weight 1 whose text is the prompt's words joined by single spaces, after
putting a space after every comma that is followed by a non-space (``"a,b"`` -> ``"a, b"``).

A prompt is plain when it has none of ``( ) " + = \\`` (weights, ``.and``/``.blend``/``.swap``/``.attend``,
``withLora``/``useLora`` and escapes all need one of them), none of the whitespace compel's words and gaps do
not agree on (vertical tab, form feed), and each ``-`` is followed by a word character: ``word-`` (and
``word--``) is compel's down-weighting. Commas and periods are plain text without parentheses or quotes.
Every other prompt goes to compel. The equality is checked against compel on random prompts
(tests/models/stable_diffusion/test_prompt_parsing.py).

Parses are kept in an LRU keyed by the prompt (the nodes of a batch of sessions with one prompt parse it
once); each call gets its own deep copy, so a caller that changes the structure changes no other's.
"""

from __future__ import annotations

import copy
import functools
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compel.prompt_parser import Conjunction

__all__ = ["parse_prompt"]

CACHE_SIZE = 256

# What makes a prompt go to compel: a syntax character, a '-' not followed by a word character (compel's
# "word-" weighting), or whitespace that pyparsing's words and gaps treat differently (\x0b, \x0c).
_NOT_PLAIN = re.compile(r'[()"+=\\\x0b\x0c]|-(?=[\s,.()"+\-=\\]|\Z)')
_GAPS = re.compile(r"[ \t\n\r]+")  # pyparsing's whitespace; other spaces (\xa0, \u3000) stay inside words
_COMMA = re.compile(r",(\S)")  # compel's own first step: a space after every comma not followed by whitespace


def parse_prompt(prompt: str) -> "Conjunction":
    """What ``compel.Compel.parse_prompt_string(prompt)`` returns (a fresh copy), without pyparsing for
    prompts that use no compel syntax."""
    return copy.deepcopy(_parse(prompt))


@functools.lru_cache(maxsize=CACHE_SIZE)
def _parse(prompt: str) -> "Conjunction":
    from compel import Compel
    from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment

    if len(prompt.strip()) == 0:  # compel's empty prompt (str.strip: any whitespace, \x0b and \xa0 included)
        return Conjunction(prompts=[FlattenedPrompt([("", 1.0)])], weights=[1.0])
    if _NOT_PLAIN.search(prompt):
        return Compel.parse_prompt_string(prompt)
    text = " ".join(word for word in _GAPS.split(_COMMA.sub(r", \1", prompt)) if word)
    return Conjunction([FlattenedPrompt([Fragment(text, 1.0)])], [1.0], lora_weights=[])
