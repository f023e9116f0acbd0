"""Graphs in the shape InvokeAI's web UI builds them for its linear (generate / canvas) tabs, for tests.

InvokeAI's UI (features/nodes/util/graph/generation/*.ts) assembles a graph node by node: ids are
``<prefix>:<10 random characters>``, every node it adds gets ``is_intermediate`` and ``use_cache`` true unless set,
fields it leaves undefined are absent from the JSON, a ``core_metadata`` node collects the settings (some by edges
from the seed and prompt nodes) and is finally wired only into the output node, and the output node is renamed
``canvas_output:...`` with ``use_cache`` false. The prompts and the seed are ``string`` / ``integer`` nodes without a
value that the enqueued batch's ``data`` fills. This module rebuilds those shapes (our own code, written from reading
the UI's builders) so tests can check that such graphs run here unchanged.
"""

from __future__ import annotations

import copy
import random
import string
from dataclasses import dataclass, field
from typing import Any, Optional

_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase


class UiGraph:
    """A graph built like the UI's ``Graph`` class: nodes keyed by prefixed random ids, edges, a metadata node."""

    def __init__(self, prefix: str, seed: int = 0) -> None:
        self._random = random.Random(seed)
        self.id = self.new_id(prefix)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: list[dict[str, Any]] = []
        self.metadata_id = self.new_id("core_metadata")

    def new_id(self, prefix: str) -> str:
        return f"{prefix}:{''.join(self._random.choice(_ALPHABET) for _ in range(10))}"

    def add(self, node_type: str, prefix: Optional[str] = None, node_id: Optional[str] = None,
            **fields: Any) -> str:
        """Adds a node with the fields given (None is sent as JSON null; leave out what the UI leaves undefined);
        returns its id."""
        nid = node_id or self.new_id(prefix or node_type)
        assert nid not in self.nodes, nid
        node = {"id": nid, "type": node_type, **fields}
        node.setdefault("is_intermediate", True)
        node.setdefault("use_cache", True)
        self.nodes[nid] = node
        return nid

    def edge(self, source: str, source_field: str, destination: str, destination_field: str) -> None:
        self.edges.append({"source": {"node_id": source, "field": source_field},
                           "destination": {"node_id": destination, "field": destination_field}})

    def delete_edges_to(self, node_id: str, fields: list[str]) -> None:
        self.edges = [e for e in self.edges if not (e["destination"]["node_id"] == node_id
                                                    and e["destination"]["field"] in fields)]

    def edges_to(self, node_id: str, fields: list[str]) -> list[dict[str, Any]]:
        return [e for e in self.edges if e["destination"]["node_id"] == node_id and e["destination"]["field"] in fields]

    def metadata(self, **fields: Any) -> None:
        """Sets metadata fields; the node is made without is_intermediate/use_cache, as the UI makes it."""
        node = self.nodes.setdefault(self.metadata_id, {"id": self.metadata_id, "type": "core_metadata"})
        node.update(fields)

    def edge_to_metadata(self, source: str, source_field: str, metadata_field: str) -> None:
        self.metadata()
        self.edge(source, source_field, self.metadata_id, metadata_field)

    def finish(self, output: str, canvas: bool = False) -> str:
        """The UI's last steps: the output node gets the canvas output fields and id (every edge renamed with it),
        and the metadata node is wired into it alone. Returns the output's new id."""
        new_id = self.new_id("canvas_output")
        node = self.nodes.pop(output)
        node.update({"id": new_id, "is_intermediate": canvas, "use_cache": False})
        self.nodes[new_id] = node
        for e in self.edges:
            for end in ("source", "destination"):
                if e[end]["node_id"] == output:
                    e[end]["node_id"] = new_id
        self.edges = [e for e in self.edges if e["source"]["node_id"] != self.metadata_id]
        self.edge(self.metadata_id, "metadata", new_id, "metadata")
        return new_id

    def graph(self) -> dict[str, Any]:
        return copy.deepcopy({"id": self.id, "nodes": self.nodes, "edges": self.edges})


def enqueue_batch(g: UiGraph, prompt_node: str, prompts: list[str], seed_node: Optional[str] = None,
                  seeds: Optional[list[int]] = None, negative_node: Optional[str] = None,
                  negative: str = "") -> dict[str, Any]:
    """The body the UI posts to enqueue_batch (prepareLinearUIBatch with seeds per iteration): the seeds as one
    batch dimension, the prompts (and the negative, zipped with them) as another."""
    data: list[list[dict[str, Any]]] = []
    if seed_node is not None:
        data.append([{"node_path": seed_node, "field_name": "value", "items": list(seeds or [0])}])
    prompt_data = [{"node_path": prompt_node, "field_name": "value", "items": list(prompts)}]
    if negative_node is not None:
        prompt_data.append({"node_path": negative_node, "field_name": "value", "items": [negative] * len(prompts)})
    data.append(prompt_data)
    return {"prepend": False, "batch": {"graph": g.graph(), "runs": 1, "data": data, "origin": "canvas",
                                        "destination": "gallery"}}


# --- the canvas ---------------------------------------------------------------------------------------------------


@dataclass
class Canvas:
    """What the canvas supplies: the composite picture, an inpaint mask (grayscale; black is repainted), an optional
    noise mask, the generation size and the size it is scaled to first ("scale before processing"), region masks."""

    picture: str = ""
    mask: str = ""
    noise_mask: Optional[str] = None
    size: tuple[int, int] = (32, 32)
    scaled: Optional[tuple[int, int]] = None
    regions: list["Region"] = field(default_factory=list)
    strength: float = 0.75
    coherence: dict[str, Any] = field(default_factory=lambda: {"coherence_mode": "Gaussian Blur",
                                                               "minimum_denoise": 0.0, "edge_radius": 16})
    mask_blur: int = 16
    infill: dict[str, Any] = field(default_factory=lambda: {"type": "infill_tile", "tile_size": 32})

    @property
    def scaled_size(self) -> tuple[int, int]:
        return self.scaled or self.size

    def sizes(self) -> tuple[dict[str, int], dict[str, int]]:
        (w, h), (sw, sh) = self.size, self.scaled_size
        return {"width": w, "height": h}, {"width": sw, "height": sh}


@dataclass
class Region:
    """A regional guidance layer: its mask image (opaque where it applies) and prompts."""

    mask: str
    positive: str = ""
    negative: str = ""
    auto_negative: bool = False


def set_size(g: UiGraph, denoise: str, size: dict[str, int]) -> None:
    g.nodes[denoise].update(size)


def add_text_to_image(g: UiGraph, canvas: Canvas, denoise: str, l2i: str) -> str:
    original, scaled = canvas.sizes()
    g.nodes[denoise].update(denoising_start=0, denoising_end=1)
    set_size(g, denoise, scaled)
    g.metadata(**original)
    if original == scaled:
        return l2i
    resize = g.add("img_resize", "resize_image_to_original_size", **original)
    g.edge(l2i, "image", resize, "image")
    return resize


def add_image_to_image(g: UiGraph, canvas: Canvas, denoise: str, l2i: str, i2l: str, vae_source: str,
                       start: float) -> str:
    original, scaled = canvas.sizes()
    g.nodes[denoise].update(denoising_start=start, denoising_end=1)
    set_size(g, denoise, scaled)
    g.edge(vae_source, "vae", i2l, "vae")
    g.edge(i2l, "latents", denoise, "latents")
    if original == scaled:
        g.nodes[i2l]["image"] = {"image_name": canvas.picture}
        return l2i
    resize_in = g.add("img_resize", "initial_image_resize_in", image={"image_name": canvas.picture}, **scaled)
    resize_out = g.add("img_resize", "initial_image_resize_out", **original)
    g.edge(resize_in, "image", i2l, "image")
    g.edge(l2i, "image", resize_out, "image")
    return resize_out


def _gradient_mask(g: UiGraph, canvas: Canvas, i2l: str, vae_source: str, **fields: Any) -> str:
    node = g.add("create_gradient_mask", **canvas.coherence, fp32=False, **fields)
    g.edge(vae_source, "vae", node, "vae")
    return node


def _paste_back(g: UiGraph, canvas: Canvas, image_source: str, mask_source: str) -> str:
    blend = g.add("invokeai_img_blend", "image_layer_blend", layer_base={"image_name": canvas.picture})
    g.edge(image_source, "image", blend, "layer_upper")
    g.edge(mask_source, "image", blend, "mask")
    return blend


def add_inpaint(g: UiGraph, canvas: Canvas, denoise: str, l2i: str, i2l: str, vae_source: str, seed: str,
                start: float) -> str:
    original, scaled = canvas.sizes()
    g.nodes[denoise].update(denoising_start=start, denoising_end=1)
    set_size(g, denoise, scaled)
    picture, mask = {"image_name": canvas.picture}, {"image_name": canvas.mask}
    if original != scaled:
        resize_image = g.add("img_resize", "resize_image_to_scaled_size", image=picture, **scaled)
        image_into_i2l = resize_image
        if canvas.noise_mask:
            resize_noise = g.add("img_resize", "resize_noise_mask_to_scaled_size",
                                 image={"image_name": canvas.noise_mask}, **scaled)
            noise = g.add("img_noise", "add_inpaint_noise", noise_type="gaussian", amount=1.0, noise_color=True)
            g.edge(seed, "value", noise, "seed")
            g.edge(resize_image, "image", noise, "image")
            g.edge(resize_noise, "image", noise, "mask")
            image_into_i2l = noise
        g.edge(image_into_i2l, "image", i2l, "image")
        resize_mask = g.add("img_resize", "resize_mask_to_scaled_size", image=mask, **scaled)
        resize_image_back = g.add("img_resize", "resize_image_to_original_size", **original)
        resize_mask_back = g.add("img_resize", "resize_mask_to_original_size", **original)
        gradient = _gradient_mask(g, canvas, i2l, vae_source)
        expand = g.add("expand_mask_with_fade", fade_size_px=canvas.mask_blur)
        g.edge(i2l, "latents", denoise, "latents")
        g.edge(vae_source, "vae", i2l, "vae")
        g.edge(resize_image, "image", gradient, "image")
        g.edge(resize_mask, "image", gradient, "mask")
        g.edge(gradient, "denoise_mask", denoise, "denoise_mask")
        g.edge(l2i, "image", resize_image_back, "image")
        g.edge(gradient, "expanded_mask_area", expand, "mask")
        g.edge(expand, "image", resize_mask_back, "image")
        return _paste_back(g, canvas, resize_image_back, resize_mask_back)
    if canvas.noise_mask:
        noise = g.add("img_noise", "add_inpaint_noise", image=picture, noise_type="gaussian", amount=1.0,
                      noise_color=True, mask={"image_name": canvas.noise_mask})
        g.edge(seed, "value", noise, "seed")
        g.edge(noise, "image", i2l, "image")
    else:
        g.nodes[i2l]["image"] = picture
    gradient = _gradient_mask(g, canvas, i2l, vae_source, image=picture, mask=mask)
    g.edge(i2l, "latents", denoise, "latents")
    g.edge(vae_source, "vae", i2l, "vae")
    g.edge(gradient, "denoise_mask", denoise, "denoise_mask")
    expand = g.add("expand_mask_with_fade", fade_size_px=canvas.mask_blur)
    g.edge(gradient, "expanded_mask_area", expand, "mask")
    return _paste_back(g, canvas, l2i, expand)


def add_outpaint(g: UiGraph, canvas: Canvas, denoise: str, l2i: str, i2l: str, vae_source: str,
                 start: float) -> str:
    """Outpainting without scaling: the picture's transparent part joins the mask, the infill fills it."""
    assert canvas.scaled is None or canvas.scaled == canvas.size, "only the unscaled outpaint path is built here"
    g.nodes[denoise].update(denoising_start=start, denoising_end=1)
    set_size(g, denoise, canvas.sizes()[1])
    picture = {"image_name": canvas.picture}
    infill_fields = dict(canvas.infill)
    infill_type = infill_fields.pop("type")
    infill = g.add(infill_type, node_id=infill_type, image=picture, **infill_fields)  # getInfill: id = its type
    alpha = g.add("tomask", "image_alpha_to_mask", image=picture)
    combine = g.add("mask_combine", mask1={"image_name": canvas.mask})
    gradient = _gradient_mask(g, canvas, i2l, vae_source, image=picture)
    g.edge(alpha, "image", combine, "mask2")
    g.edge(combine, "image", gradient, "mask")
    g.edge(infill, "image", i2l, "image")
    g.edge(i2l, "latents", denoise, "latents")
    g.edge(vae_source, "vae", i2l, "vae")
    g.edge(gradient, "denoise_mask", denoise, "denoise_mask")
    expand = g.add("expand_mask_with_fade", fade_size_px=canvas.mask_blur)
    g.edge(gradient, "expanded_mask_area", expand, "mask")
    return _paste_back(g, canvas, l2i, expand)


def add_lora_collection(g: UiGraph, loader_type: str, loras: list[tuple[dict[str, Any], float]], model_loader: str,
                        denoise: str, encoder_field: str, encoders: list[str]) -> None:
    """addZImageLoRAs / addFlux2KleinLoRAs / addFlux2DevLoRAs: lora_selector nodes into a collect, into the
    collection loader, which takes the loader's transformer and text encoder and feeds the denoise and the prompt
    nodes instead."""
    collector = g.add("collect", "lora_collector")
    loader = g.add(loader_type)
    g.edge(collector, "collection", loader, "loras")
    g.edge(model_loader, "transformer", loader, "transformer")
    g.edge(model_loader, encoder_field, loader, encoder_field)
    g.delete_edges_to(denoise, ["transformer"])
    g.edge(loader, "transformer", denoise, "transformer")
    for encoder in encoders:
        g.delete_edges_to(encoder, [encoder_field])
        g.edge(loader, encoder_field, encoder, encoder_field)
    for model, weight in loras:
        selector = g.add("lora_selector", lora=model, weight=weight)
        g.edge(selector, "lora", collector, "item")
    g.metadata(loras=[{"model": model, "weight": weight} for model, weight in loras])


def add_regions(g: UiGraph, canvas: Canvas, encoder_type: str, copied_fields: list[str], pos_cond: str,
                pos_collect: str, neg_cond: Optional[str] = None, neg_collect: Optional[str] = None) -> None:
    """addRegions for prompt-only regions: per region an alpha_mask_to_tensor, a masked text encoder with the
    global encoder's inputs copied, into the positive (or negative) collect; auto-negative inverts the mask."""
    for region in canvas.regions:
        to_tensor = g.add("alpha_mask_to_tensor", "prompt_region_mask_to_tensor", image={"image_name": region.mask})
        if region.positive:
            cond = g.add(encoder_type, "prompt_region_positive_cond", prompt=region.positive)
            g.edge(to_tensor, "mask", cond, "mask")
            for e in g.edges_to(pos_cond, copied_fields):
                g.edge(e["source"]["node_id"], e["source"]["field"], cond, e["destination"]["field"])
            g.edge(cond, "conditioning", pos_collect, "item")
        if region.negative:
            assert neg_cond and neg_collect
            cond = g.add(encoder_type, "prompt_region_negative_cond", prompt=region.negative)
            g.edge(to_tensor, "mask", cond, "mask")
            g.edge(cond, "conditioning", neg_collect, "item")
            for e in g.edges_to(neg_cond, copied_fields):
                g.edge(e["source"]["node_id"], e["source"]["field"], cond, e["destination"]["field"])
        if region.auto_negative and region.positive:
            assert neg_collect
            invert = g.add("invert_tensor_mask", "prompt_region_invert_tensor_mask")
            g.edge(to_tensor, "mask", invert, "mask")
            cond = g.add(encoder_type, "prompt_region_positive_cond_inverted", prompt=region.positive)
            g.edge(invert, "mask", cond, "mask")
            g.edge(cond, "conditioning", neg_collect, "item")
            for e in g.edges_to(pos_cond, copied_fields):
                g.edge(e["source"]["node_id"], e["source"]["field"], cond, e["destination"]["field"])
