"""Limits on what one run may ask for: how long a prompt is and how large an image is.

A text encoder fed a megabyte of prompt, or a noise node asked for an image 100,000 pixels wide, would
hold a shared GPU runtime (and the other runs waiting on it) for minutes before failing. A node field
declares the limit it is bound by (``InputField(limit=PROMPT_LENGTH)``); the bound is an ``[invokeai]``
option read when a value is checked, so a deployment can raise it without a code change.

The same bound reaches the trigger form: the marker exposes ``max_length`` / ``le`` the way pydantic's
own constraints do, and the Param schema builder reads those (``compiler.param_schema``). Limits leave a
node's JSON schema as InvokeAI has it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from pydantic_core import core_schema

from invokeai_provider.config import env_var, settings

__all__ = ["IMAGE_SIDE", "PROMPT_LENGTH", "FieldLimit", "ImageAreaError", "ImageSideLimit", "TextLengthLimit",
           "check_image_area", "size_problem"]


class FieldLimit:
    """A bound on a node field whose value is an ``[invokeai]`` option; pydantic applies it as an after-validator
    (field metadata with ``__get_pydantic_core_schema__``), so None (an input not given yet) passes."""

    option: str
    unit: str

    def __init__(self, option: str, unit: str) -> None:
        self.option = option
        self.unit = unit

    @property
    def limit(self) -> int:
        return int(getattr(settings(self.option), self.option))

    def measure(self, value: Any) -> int:
        raise NotImplementedError

    def _check(self, value: Any) -> Any:
        if value is None:
            return value
        size, limit = self.measure(value), self.limit
        if size > limit:
            raise ValueError(f"{size:,} {self.unit}; at most {limit:,} allowed "
                             f"([invokeai] {self.option}, {env_var(self.option)})")
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], core_schema.CoreSchema]
                                     ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.option!r})"


class TextLengthLimit(FieldLimit):
    """At most ``[invokeai] <option>`` characters."""

    @property
    def max_length(self) -> int:
        return self.limit

    def measure(self, value: Any) -> int:
        return len(value) if isinstance(value, str) else 0


class ImageSideLimit(FieldLimit):
    """A width or height of at most ``[invokeai] <option>`` pixels."""

    @property
    def le(self) -> int:
        return self.limit

    def measure(self, value: Any) -> int:
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


PROMPT_LENGTH = TextLengthLimit("max_prompt_length", "characters")
IMAGE_SIDE = ImageSideLimit("max_image_side", "pixels")


def _limited_by(info: Any, kind: type[FieldLimit]) -> bool:
    return any(isinstance(meta, kind) for meta in getattr(info, "metadata", ()))


class ImageAreaError(ValueError):
    """Width x height beyond the limit; ``field`` names the input that a validation error should point at."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def check_image_area(node: Any) -> None:
    """Raises `ImageAreaError` when a node's ``width`` and ``height`` are both image sides (`IMAGE_SIDE`) and their
    product exceeds ``[invokeai] max_image_pixels``."""
    fields = type(node).model_fields
    if not (_limited_by(fields.get("width"), ImageSideLimit) and _limited_by(fields.get("height"), ImageSideLimit)):
        return
    width, height = getattr(node, "width", None), getattr(node, "height", None)
    if isinstance(width, int) and isinstance(height, int):
        problem = size_problem(width, height)
        if problem:
            raise ImageAreaError(problem, "width")


def size_problem(width: int, height: int) -> Optional[str]:
    """The error text for an image of ``width`` x ``height`` with a side beyond ``[invokeai] max_image_side`` or
    an area beyond ``max_image_pixels``, else None. Nodes whose output size is computed (a scale factor)
    check it with this before making the image."""
    config = settings("max_image_side", "max_image_pixels")
    if max(width, height) > config.max_image_side:
        return (f"{width} x {height} has a side over {config.max_image_side:,} pixels "
                f"([invokeai] max_image_side, {env_var('max_image_side')})")
    if width * height > config.max_image_pixels:
        return (f"{width} x {height} is {width * height:,} pixels; at most {config.max_image_pixels:,} allowed "
                f"([invokeai] max_image_pixels, {env_var('max_image_pixels')})")
    return None
