"""Edge type compatibility with InvokeAI's rules (reference §2.2, rule 5)."""

from __future__ import annotations

import types
import typing
from typing import Any, get_args, get_origin

NoneType = type(None)


def is_any(t: Any) -> bool:
    return t is Any or Any in get_args(t)


def is_list_or_contains_list(t: Any) -> bool:
    if get_origin(t) is list:
        return True
    return any(get_origin(arg) is list for arg in get_args(t))


def is_union(t: Any) -> bool:
    return get_origin(t) in (typing.Union, types.UnionType)


def _union_subset(from_type: Any, to_type: Any) -> bool:
    from_args, to_args = get_args(from_type), get_args(to_type)
    if not from_args:
        return from_type in to_args
    return all(arg in to_args for arg in from_args)


def are_connection_types_compatible(from_type: Any, to_type: Any) -> bool:
    """Equal types, Any on either side, membership in a union, int→float, int|float→str, subclass, union subset."""
    if from_type is None or to_type is None:
        return False
    if from_type == to_type or is_any(from_type) or is_any(to_type):
        return True
    if from_type in get_args(to_type) or to_type in get_args(from_type):
        return True
    if from_type is int and to_type is float:
        return True
    if from_type in (int, float) and to_type is str:
        return True
    if isinstance(from_type, type) and isinstance(to_type, type) and get_origin(from_type) is None \
            and get_origin(to_type) is None:
        try:
            return issubclass(from_type, to_type)
        except TypeError:
            return False
    return _union_subset(from_type, to_type)


def collected_item_fits(root: Any, to_item: Any) -> bool:
    """Stricter than an edge: collected items must be the list's item type, a union arm of it, or a subclass."""
    return is_any(to_item) or root == to_item or _union_subset(root, to_item) or _is_subclass(root, to_item)


def collection_item_types(t: Any) -> set[Any]:
    """The item types of a list annotation, or of the list branches of a union."""
    if is_any(t):
        return {Any}
    if get_origin(t) is list:
        return {arg for arg in get_args(t) if arg is not NoneType}
    items: set[Any] = set()
    for arg in get_args(t):
        if is_any(arg):
            items.add(Any)
        elif get_origin(arg) is list:
            items.update(a for a in get_args(arg) if a is not NoneType)
    return items


def single_item_types(t: Any) -> set[Any]:
    """The types a value of annotation ``t`` may have, None removed (a union is split into its arms)."""
    if get_origin(t) is None or not is_union(t):
        return {t} if t is not NoneType else set()
    return {arg for arg in get_args(t) if arg is not NoneType}


def root_types(candidates: set[Any]) -> list[Any]:
    """The types in ``candidates`` that are not a subclass of another candidate."""
    plain = [t for t in candidates if t is not Any]
    roots = []
    for t in plain:
        parents = [o for o in plain if o is not t and _is_subclass(t, o)]
        if not parents:
            roots.append(t)
    return roots


def _is_subclass(a: Any, b: Any) -> bool:
    try:
        return isinstance(a, type) and isinstance(b, type) and issubclass(a, b)
    except TypeError:
        return False


def type_name(t: Any) -> str:
    if t is None:
        return "nothing"
    if isinstance(t, type) and get_origin(t) is None:
        return t.__name__
    return str(t).replace("typing.", "")
