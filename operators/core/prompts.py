"""Prompt nodes: dynamic prompts, prompts read from a text file, and style preset templates.

Type strings, versions, fields and outputs follow InvokeAI's `invocations/prompt.py` and
`invocations/prompt_template.py`. The dynamicprompts library is imported only when a node runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Iterator, Optional

from invokeai_provider.core.fields import StylePresetField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.core.limits import PROMPT_LENGTH
from invokeai_provider.operators.core.primitives import StringCollectionOutput

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "prompt"
_TEXTAREA = "textarea"

# Name of the optional run service that holds style presets (InvokeAI: services.style_preset_records).
STYLE_PRESET_SERVICE = "style_preset_records"


# --- dynamic prompts ---------------------------------------------------------------------------------


def _variant_wildcards(command: Any, inside_variant: bool = False) -> Iterator[str]:
    """Yields the plain wildcard names used (at any depth) as a variant's value.

    Only those matter: an unknown wildcard used as a variant value sends dynamicprompts' combinatorial
    generator into an endless loop, while a bare unknown wildcard generates fine. Names built from
    variables (``__${x}__``) cannot be checked ahead of time and are skipped.
    """
    from dynamicprompts.commands import (
        SequenceCommand,
        VariantCommand,
        WildcardCommand,
        WrapCommand,
    )

    if isinstance(command, WildcardCommand):
        if inside_variant and isinstance(command.wildcard, str):
            yield command.wildcard
    elif isinstance(command, SequenceCommand):
        for token in command.tokens:
            yield from _variant_wildcards(token, inside_variant)
    elif isinstance(command, VariantCommand):
        for value in command.values:
            yield from _variant_wildcards(value, True)
    elif isinstance(command, WrapCommand):
        yield from _variant_wildcards(command.wrapper, inside_variant)
        yield from _variant_wildcards(command.inner, inside_variant)


def missing_variant_wildcards(prompt: str) -> list[str]:
    """The distinct wildcard names that would hang the combinatorial generator (no wildcard files are
    configured, so every referenced wildcard is unknown). A prompt that does not parse returns [] and is
    left to the generator to report."""
    from dynamicprompts.parser.parse import parse
    from dynamicprompts.wildcards import WildcardManager
    from pyparsing import ParseException

    try:
        tree = parse(prompt)
    except ParseException:
        return []
    manager = WildcardManager()
    names: list[str] = []
    for name in _variant_wildcards(tree):
        if name not in names and not manager.get_values(name):
            names.append(name)
    return names


@invocation("dynamic_prompt", title="Dynamic Prompt", tags=["prompt", "collection"], category=_CATEGORY,
            version="1.0.1", use_cache=False)
class DynamicPromptInvocation(BaseInvocation):
    """Expands a prompt written in dynamicprompts syntax ({a|b} variants) into a list of prompts, with the
    random or the combinatorial generator."""

    prompt: str = InputField(description="The prompt to parse with dynamicprompts", ui_component=_TEXTAREA,
                             limit=PROMPT_LENGTH)
    max_prompts: int = InputField(default=1, description="The number of prompts to generate")
    combinatorial: bool = InputField(default=False, description="Whether to use the combinatorial generator")

    def invoke(self, context: "InvocationContext") -> StringCollectionOutput:
        from dynamicprompts.generators import (
            CombinatorialPromptGenerator,
            RandomPromptGenerator,
        )

        if self.combinatorial:
            missing = missing_variant_wildcards(self.prompt)
            if missing:
                raise ValueError(f"No values found for wildcard(s): {', '.join(missing)}")
            prompts = CombinatorialPromptGenerator().generate(self.prompt, max_prompts=self.max_prompts)
        else:
            prompts = RandomPromptGenerator().generate(self.prompt, num_images=self.max_prompts)
        return StringCollectionOutput(collection=[str(p) for p in prompts])


# --- prompts from a file ------------------------------------------------------------------------------


def read_prompts(path: str, pre_prompt: Optional[str], post_prompt: Optional[str], start_line: int,
                 max_prompts: int) -> list[str]:
    """Lines ``start_line`` (1-based) onward, at most ``max_prompts`` of them (0 or less: all), each
    stripped and wrapped in the pre/post strings. Blank lines count and are kept, as in InvokeAI."""
    first = start_line - 1
    last = None if max_prompts <= 0 else first + max_prompts
    prompts: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if last is not None and index >= last:
                break
            if index >= first:
                prompts.append(f"{pre_prompt or ''}{line.strip()}{post_prompt or ''}")
    return prompts


@invocation("prompt_from_file", title="Prompts from File", tags=["prompt", "file"], category=_CATEGORY,
            version="1.0.2")
class PromptsFromFileInvocation(BaseInvocation):
    """Reads prompts, one per line, from a text file on the machine that runs the node."""

    file_path: str = InputField(description="Path to prompt text file")
    pre_prompt: Optional[str] = InputField(default=None, description="String to prepend to each prompt",
                                           ui_component=_TEXTAREA)
    post_prompt: Optional[str] = InputField(default=None, description="String to append to each prompt",
                                            ui_component=_TEXTAREA)
    start_line: int = InputField(default=1, ge=1, description="Line in the file to start start from")
    max_prompts: int = InputField(default=1, ge=0, description="Max lines to read from file (0=all)")

    def invoke(self, context: "InvocationContext") -> StringCollectionOutput:
        # Checked when the node runs, not when the graph is parsed: the file lives on the worker, which is
        # not necessarily the machine that parses the DAG.
        if not os.path.isfile(self.file_path):
            raise FileNotFoundError(
                f"node {self.id} (prompt_from_file): field file_path: no such file {self.file_path!r} "
                "on the machine running this node"
            )
        prompts = read_prompts(self.file_path, self.pre_prompt, self.post_prompt, self.start_line, self.max_prompts)
        return StringCollectionOutput(collection=prompts)


# --- style preset templates ---------------------------------------------------------------------------


@invocation_output("prompt_template_output")
class PromptTemplateOutput(BaseInvocationOutput):
    """The positive and negative prompts after a style preset's template was applied."""

    positive_prompt: str = OutputField(description="The positive prompt with the template applied")
    negative_prompt: str = OutputField(description="The negative prompt with the template applied")


def _lookup(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def preset_templates(record: Any) -> tuple[str, str]:
    """(positive, negative) templates of a style preset record: an InvokeAI-shaped record with
    ``preset_data``, or the preset data itself, as an object or a mapping."""
    data = _lookup(record, "preset_data")
    if data is None:
        data = record
    positive, negative = _lookup(data, "positive_prompt"), _lookup(data, "negative_prompt")
    if not isinstance(positive, str) or not isinstance(negative, str):
        raise ValueError("style preset record has no positive_prompt/negative_prompt strings")
    return positive, negative


@invocation("prompt_template", title="Prompt Template", tags=["prompt", "template", "style", "preset"],
            category=_CATEGORY, version="1.0.0")
class PromptTemplateInvocation(BaseInvocation):
    """Fills a style preset's positive and negative templates: every {prompt} placeholder is replaced by the
    matching input prompt."""

    style_preset: StylePresetField = InputField(description="The Style Preset to use as a template")
    positive_prompt: str = InputField(default="",
                                      description="The positive prompt to insert into the template's {prompt} placeholder",
                                      ui_component=_TEXTAREA)
    negative_prompt: str = InputField(default="",
                                      description="The negative prompt to insert into the template's {prompt} placeholder",
                                      ui_component=_TEXTAREA)

    def invoke(self, context: "InvocationContext") -> PromptTemplateOutput:
        preset_id = self.style_preset.style_preset_id
        store = context.services.get(STYLE_PRESET_SERVICE)
        if store is None:
            raise LookupError(
                f"node {self.id} (prompt_template): field style_preset: no style preset store is configured "
                f"(run service {STYLE_PRESET_SERVICE!r}), so preset {preset_id!r} cannot be read"
            )
        record = store.get(preset_id)
        if record is None:
            raise LookupError(f"node {self.id} (prompt_template): field style_preset: style preset {preset_id!r} "
                              "not found")
        positive, negative = preset_templates(record)
        return PromptTemplateOutput(positive_prompt=positive.replace("{prompt}", self.positive_prompt or ""),
                                    negative_prompt=negative.replace("{prompt}", self.negative_prompt or ""))
