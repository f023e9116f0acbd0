"""Invocation core: the node and output base classes, their decorators and the input field helper.

A node is a pydantic model registered under InvokeAI's type string. Every input may be left out when
the node is built (an edge may supply it later) and is checked when the node runs (reference §1.1).
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from abc import ABC, abstractmethod
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from invokeai_provider.core.fields import BoardField, MetadataField
from invokeai_provider.core.limits import FieldLimit, check_image_area
from invokeai_provider.errors import InvalidNodeDefinitionError, MissingInputError, RequiredConnectionError

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_TYPE_STRING = re.compile(r"^\S+$")


class Input(str, Enum):
    """Where an input's value may come from: a literal, an edge, or either."""

    Any = "any"
    Direct = "direct"
    Connection = "connection"


class FieldKind(str, Enum):
    Input = "input"
    Output = "output"
    Internal = "internal"
    NodeAttribute = "node_attribute"


class Classification(str, Enum):
    Stable = "stable"
    Beta = "beta"
    Prototype = "prototype"
    Deprecated = "deprecated"
    Internal = "internal"
    Special = "special"


class UIConfig(BaseModel):
    title: Optional[str] = None
    tags: Optional[list[str]] = None
    category: Optional[str] = None
    version: str = "1.0.0"
    classification: Classification = Classification.Stable
    node_pack: str = "invokeai"
    gpu: bool = False


def InputField(  # noqa: N802 - mirrors pydantic's Field and InvokeAI's InputField
    default: Any = PydanticUndefined,
    *,
    description: Optional[str] = None,
    title: Optional[str] = None,
    input: Input = Input.Any,
    ge: Optional[float] = None,
    gt: Optional[float] = None,
    le: Optional[float] = None,
    lt: Optional[float] = None,
    min_length: Optional[int] = None,
    max_length: Optional[int] = None,
    pattern: Optional[str] = None,
    multiple_of: Optional[float] = None,
    field_kind: FieldKind = FieldKind.Input,
    limit: Optional["FieldLimit"] = None,
    **ui: Any,
) -> Any:
    """An input that is optional when the node is built and, unless it has a default, required when it runs.

    The original requirement and default are kept in the JSON schema extras (`orig_required`,
    `orig_default`), as InvokeAI does, so a schema consumer (the trigger form, `nodes --json`) sees them.
    ``ui`` takes InvokeAI's ui_* hints (ui_type, ui_component, ui_hidden, ui_order, ui_choice_labels).
    ``limit`` bounds the value by an ``[invokeai]`` option (`invokeai_provider.core.limits`).
    """
    extra: dict[str, Any] = {"field_kind": field_kind.value, "input": input.value}
    extra["orig_required"] = default is PydanticUndefined
    if default is not PydanticUndefined:
        extra["orig_default"] = to_jsonable_python(default)
    extra.update({k: to_jsonable_python(v) for k, v in ui.items() if v is not None})
    constraints = {
        k: v
        for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, min_length=min_length, max_length=max_length, pattern=pattern,
                         multiple_of=multiple_of).items()
        if v is not None
    }
    if default is PydanticUndefined and input is not Input.Direct:
        default = None
    info: FieldInfo = Field(default=default, description=description, title=title, json_schema_extra=extra,
                            **constraints)
    if limit is not None:
        info.metadata.append(limit)
    return info


def OutputField(  # noqa: N802
    default: Any = PydanticUndefined, *, description: Optional[str] = None, title: Optional[str] = None, **ui: Any
) -> Any:
    extra = {"field_kind": FieldKind.Output.value, **{k: v for k, v in ui.items() if v is not None}}
    return Field(default=default, description=description, title=title, json_schema_extra=extra)


class BaseInvocationOutput(BaseModel):
    """Base of every node output; the `@invocation_output` decorator adds the `type` literal."""

    model_config = ConfigDict(protected_namespaces=(), validate_assignment=True, extra="forbid")

    @classmethod
    def get_type(cls) -> str:
        return cls.model_fields["type"].default


class BaseInvocation(ABC, BaseModel):
    """Base of every node; the `@invocation` decorator adds the `type` literal and registers the class."""

    model_config = ConfigDict(
        protected_namespaces=(),
        validate_assignment=True,
        extra="forbid",
        coerce_numbers_to_str=True,
    )

    id: str = Field(description="The id of this instance of an invocation. Must be unique among all instances of invocations.",
                    json_schema_extra={"field_kind": FieldKind.NodeAttribute.value})
    is_intermediate: bool = Field(default=False, description="Whether or not this is an intermediate invocation.",
                                  json_schema_extra={"field_kind": FieldKind.NodeAttribute.value})
    use_cache: bool = Field(default=True, description="Whether or not to use the cache",
                            json_schema_extra={"field_kind": FieldKind.NodeAttribute.value})

    UIConfig: ClassVar[UIConfig]
    # The annotations as the author wrote them, before build-time optionality was added.
    original_annotations: ClassVar[dict[str, Any]] = {}
    output_class: ClassVar[type[BaseInvocationOutput]]

    @classmethod
    def get_type(cls) -> str:
        return cls.model_fields["type"].default

    @model_validator(mode="after")
    def _image_area_within_limit(self) -> "BaseInvocation":
        check_image_area(self)
        return self

    @classmethod
    def input_fields(cls) -> dict[str, FieldInfo]:
        """The node's inputs: every field that is not a node attribute."""
        return {
            name: info
            for name, info in cls.model_fields.items()
            if _field_extra(info).get("field_kind") != FieldKind.NodeAttribute.value and name != "type"
        }

    @classmethod
    def input_type(cls, field: str) -> Any:
        return cls.original_annotations.get(field)

    @classmethod
    def get_output_annotation(cls) -> type[BaseInvocationOutput]:
        return cls.output_class

    @classmethod
    def produces_images(cls) -> bool:
        """Whether its output carries an image (it saves one): its tasks record Asset events, and the node
        cache never reuses its output (each session gets its own image)."""
        from invokeai_provider.core.fields import ImageField

        return any(info.annotation is ImageField for info in cls.get_output_annotation().model_fields.values())

    @abstractmethod
    def invoke(self, context: "InvocationContext") -> BaseInvocationOutput:
        """Runs the node. Inputs are all present and validated when this is called."""

    def check_required_inputs(self) -> None:
        """Raises the InvokeAI error for the first required input that has no value."""
        for name, info in type(self).input_fields().items():
            extra = _field_extra(info)
            if extra.get("orig_required") and getattr(self, name) is None:
                if extra.get("input") == Input.Connection.value:
                    raise RequiredConnectionError(self.id, self.get_type(), name)
                raise MissingInputError(self.id, self.get_type(), name)

    def invoke_internal(self, context: "InvocationContext") -> BaseInvocationOutput:
        self.check_required_inputs()
        return self.invoke(context)

    def literal_values(self) -> dict[str, Any]:
        """The inputs that carry a value, as JSON (what a graph node dict holds besides its attributes)."""
        return {k: v for k, v in self.model_dump(mode="json", exclude={"id", "type", "is_intermediate", "use_cache"}).items()}


def _field_extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _is_optional(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return type(None) in typing.get_args(annotation)
    return annotation is Any or annotation is type(None)


def _resolve_return_annotation(cls: type) -> Any:
    annotation = inspect.signature(cls.invoke).return_annotation
    if isinstance(annotation, str):
        module = sys.modules[cls.__module__]
        annotation = eval(annotation, vars(module))  # noqa: S307 - a class name from the node's own module
    return annotation


def _node_pack(module: str) -> str:
    top = module.split(".")[0]
    return "invokeai" if top == "invokeai_provider" else top


TInvocation = TypeVar("TInvocation", bound=BaseInvocation)
TOutput = TypeVar("TOutput", bound=BaseInvocationOutput)


def invocation(
    invocation_type: str,
    *,
    title: Optional[str] = None,
    tags: Optional[list[str]] = None,
    category: Optional[str] = None,
    version: str = "1.0.0",
    use_cache: bool = True,
    classification: Classification = Classification.Stable,
    gpu: bool = False,
) -> Callable[[type[TInvocation]], type[TInvocation]]:
    """Registers a node class under InvokeAI's type string.

    ``gpu`` marks nodes that need the accelerator; the compiler routes them to the GPU queue.
    """
    from invokeai_provider.core.registry import InvocationRegistry

    def wrapper(cls: type[TInvocation]) -> type[TInvocation]:
        if not _TYPE_STRING.match(invocation_type):
            raise InvalidNodeDefinitionError(f'node type must be non-empty and have no whitespace, got "{invocation_type}"')
        if not _SEMVER.match(version):
            raise InvalidNodeDefinitionError(f'invalid version "{version}" for node "{invocation_type}": expected semver')
        if getattr(cls.invoke, "__isabstractmethod__", False):
            raise InvalidNodeDefinitionError(f'node "{invocation_type}" must implement invoke()')
        output_class = _resolve_return_annotation(cls)
        if not (isinstance(output_class, type) and issubclass(output_class, BaseInvocationOutput)
                and output_class is not BaseInvocationOutput):
            raise InvalidNodeDefinitionError(
                f'node "{invocation_type}": invoke() must be annotated to return a registered output class'
            )

        originals: dict[str, Any] = {}
        fields: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            annotation = info.annotation
            originals[name] = annotation
            if info.default is None and not _is_optional(annotation):
                fields[name] = (Optional[annotation], info)
        fields["use_cache"] = (bool, Field(default=use_cache, description="Whether or not to use the cache",
                                           json_schema_extra={"field_kind": FieldKind.NodeAttribute.value}))
        fields["type"] = (Literal[invocation_type], Field(default=invocation_type, title="type",
                                                         json_schema_extra={"field_kind": FieldKind.NodeAttribute.value}))
        new_cls = create_model(  # type: ignore[call-overload]
            cls.__name__, __base__=cls, __module__=cls.__module__, __doc__=cls.__doc__, **fields
        )
        new_cls.__qualname__ = cls.__qualname__
        new_cls.original_annotations = originals
        new_cls.output_class = output_class
        new_cls.UIConfig = UIConfig(
            title=title, tags=tags, category=category, version=version, classification=classification,
            node_pack=_node_pack(cls.__module__), gpu=gpu,
        )
        InvocationRegistry.register_invocation(new_cls)
        return new_cls  # type: ignore[return-value]

    return wrapper


def invocation_output(output_type: str) -> Callable[[type[TOutput]], type[TOutput]]:
    """Registers an output class under InvokeAI's output type string."""
    from invokeai_provider.core.registry import InvocationRegistry

    def wrapper(cls: type[TOutput]) -> type[TOutput]:
        if not _TYPE_STRING.match(output_type):
            raise InvalidNodeDefinitionError(f'output type must have no whitespace, got "{output_type}"')
        new_cls = create_model(  # type: ignore[call-overload]
            cls.__name__, __base__=cls, __module__=cls.__module__, __doc__=cls.__doc__,
            type=(Literal[output_type], Field(default=output_type, title="type",
                                              json_schema_extra={"field_kind": FieldKind.NodeAttribute.value})),
        )
        new_cls.__qualname__ = cls.__qualname__
        InvocationRegistry.register_output(new_cls)
        return new_cls  # type: ignore[return-value]

    return wrapper


class WithMetadata(BaseModel):
    """Mixin for nodes that write images: the metadata embedded in the PNG."""

    metadata: Optional[MetadataField] = InputField(
        default=None, description="Optional metadata to be saved with the image",
        input=Input.Connection, field_kind=FieldKind.Internal,
    )


class WithBoard(BaseModel):
    """Mixin for nodes that write images: the board they land on."""

    board: Optional[BoardField] = InputField(default=None, description="The board to save the image to", input=Input.Direct)
