"""Old node type names that saved graphs and workflows still use, resolved to the current nodes.

InvokeAI removed its ControlNet "processor" nodes (``canny_image_processor`` and the rest) on 2025-04-04
(commit 8d8150b47e) in favour of the newer preprocessor nodes, yet older saved workflows, and even some of
InvokeAI's own default workflows, still name them. Here such a node loads as its current replacement:
fields that were renamed carry their value (and edges) over, and fields the new node has no use for are
dropped. The targets follow InvokeAI's own map of old processor names to filters (the frontend's
``PROCESSOR_TO_FILTER_MAP``); the field renames pair fields of the same meaning and default.

Dropped fields: ``detect_resolution`` / ``image_resolution`` (the old nodes resized to them; the new ones
work at the input's size, and a ControlNet resizes its image anyway), content shuffle's ``h`` / ``w`` (a
resize as well), MiDaS' ``a_mult`` / ``bg_th`` and LeReS' ``thr_a`` / ``thr_b`` / ``boost`` (no such knob
on Depth Anything), Depth Anything's ``resolution``. An alias is used only while the old type is not
registered itself, so a node pack that brings the old node back wins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from invokeai_provider.errors import UnknownNodeTypeError

log = logging.getLogger(__name__)

_RESOLUTIONS = ("detect_resolution", "image_resolution")


@dataclass(frozen=True)
class NodeAlias:
    """One old type: what it loads as (None: removed without a replacement) and how its fields map."""

    old_type: str
    new_type: Optional[str]
    renames: Mapping[str, str] = field(default_factory=dict)
    dropped: frozenset[str] = frozenset()
    note: str = ""

    def field_name(self, old_field: str) -> Optional[str]:
        """The current name of an input field; None when the current node has no such input."""
        if old_field in self.dropped:
            return None
        return self.renames.get(old_field, old_field)


def _alias(old: str, new: Optional[str], renames: Optional[dict[str, str]] = None,
           dropped: Iterable[str] = _RESOLUTIONS, note: str = "") -> tuple[str, NodeAlias]:
    return old, NodeAlias(old, new, dict(renames or {}), frozenset(dropped), note)


# old type -> current type, field renames (old -> new), fields dropped
LEGACY_NODE_ALIASES: dict[str, NodeAlias] = dict([
    _alias("canny_image_processor", "canny_edge_detection"),
    _alias("content_shuffle_image_processor", "content_shuffle", {"f": "scale_factor"},
           dropped=(*_RESOLUTIONS, "h", "w")),
    _alias("color_map_image_processor", "color_map", {"color_map_tile_size": "tile_size"}, dropped=()),
    _alias("hed_image_processor", "hed_edge_detection"),
    _alias("lineart_image_processor", "lineart_edge_detection"),
    _alias("lineart_anime_image_processor", "lineart_anime_edge_detection"),
    _alias("pidi_image_processor", "pidi_edge_detection", {"safe": "quantize_edges"}),
    _alias("mlsd_image_processor", "mlsd_detection", {"thr_v": "score_threshold", "thr_d": "distance_threshold"}),
    _alias("normalbae_image_processor", "normal_map"),
    _alias("mediapipe_face_processor", "mediapipe_face_detection"),
    _alias("dw_openpose_image_processor", "dw_openpose_detection", dropped=("image_resolution",)),
    _alias("depth_anything_image_processor", "depth_anything_depth_estimation", dropped=("resolution",)),
    _alias("zoe_depth_image_processor", "depth_anything_depth_estimation", dropped=()),
    # InvokeAI's map has no entry for these two depth processors; Depth Anything is the depth node it kept.
    _alias("midas_depth_image_processor", "depth_anything_depth_estimation",
           dropped=(*_RESOLUTIONS, "a_mult", "bg_th")),
    _alias("leres_image_processor", "depth_anything_depth_estimation",
           dropped=(*_RESOLUTIONS, "thr_a", "thr_b", "boost")),
    _alias("segment_anything_processor", None,
           note="InvokeAI's segment_anything node takes prompts (boxes or points), not a whole image"),
    _alias("tile_image_processor", None, dropped=(),
           note="its down-sampling is an img_scale (area) by 1/down_sampling_rate"),
])


def alias_for(node_type: Any) -> Optional[NodeAlias]:
    """The alias for ``node_type``, unless a node of that type is registered (it then wins)."""
    from invokeai_provider.core.registry import InvocationRegistry

    if not isinstance(node_type, str) or node_type not in LEGACY_NODE_ALIASES or InvocationRegistry.has_type(node_type):
        return None
    return LEGACY_NODE_ALIASES[node_type]


def resolve_node(node_key: str, data: Mapping[str, Any]) -> Mapping[str, Any]:
    """A node dict naming an old type, rewritten for its current type; other dicts come back unchanged.

    Raises UnknownNodeTypeError naming the node, the old type and why, when the replacement does not
    exist or is not registered (yet) in this provider.
    """
    alias = alias_for(data.get("type"))
    if alias is None:
        return data
    from invokeai_provider.core.registry import InvocationRegistry

    if alias.new_type is None:
        raise UnknownNodeTypeError(
            f'node {node_key}: node type "{alias.old_type}" was removed from InvokeAI in 2025 and has no '
            f"replacement node{f' ({alias.note})' if alias.note else ''}; replace the node in the workflow",
            node_id=node_key, field="type")
    if not InvocationRegistry.has_type(alias.new_type):
        raise UnknownNodeTypeError(
            f'node {node_key}: old node type "{alias.old_type}" loads as its replacement "{alias.new_type}", '
            "which is not available in this provider yet", node_id=node_key, field="type")
    values: dict[str, Any] = {"type": alias.new_type}
    for name, value in data.items():
        if name == "type":
            continue
        new_name = alias.field_name(name)
        if new_name is None:
            log.info("node %s: dropping field %r of old type %s (not an input of %s)", node_key, name,
                     alias.old_type, alias.new_type)
        elif new_name not in values or name == new_name:  # a value under the new name wins
            values[new_name] = value
    return values


def resolve_edges(node_types: Mapping[str, Any], edges: Iterable[Any]) -> list[Any]:
    """Edges with destination fields of aliased nodes renamed; edges into dropped fields are left out.

    ``node_types`` maps node ids to the type names the document gave; edges that are not well-formed
    pass through untouched, for the edge parser to report.
    """
    result: list[Any] = []
    for edge in edges:
        try:
            destination = edge["destination"]
            alias = alias_for(node_types.get(str(destination["node_id"])))
            old_field = str(destination["field"])
        except (KeyError, TypeError):
            result.append(edge)
            continue
        if alias is None or alias.new_type is None:
            result.append(edge)
            continue
        new_field = alias.field_name(old_field)
        if new_field is None:
            log.info("edge into %s.%s dropped: old type %s's field has no counterpart in %s",
                     destination["node_id"], old_field, alias.old_type, alias.new_type)
            continue
        result.append({**edge, "destination": {**destination, "field": new_field}})
    return result


def current_field_name(node_type: Optional[str], field_name: str) -> Optional[str]:
    """The current name of input ``field_name`` of a node the document typed ``node_type``; None if dropped."""
    alias = alias_for(node_type)
    return field_name if alias is None else alias.field_name(field_name)
