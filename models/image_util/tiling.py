"""Tiling arithmetic and tile merging, as InvokeAI's ``backend/tiles`` does them.

The tile nodes expose this to graphs; upscalers run their networks tile by tile with it
(:func:`tiled_inference`). Coordinates and overlaps are the ones InvokeAI computes for the same inputs, and
merged pixels agree with InvokeAI's (its NumPy 1.x arithmetic, OpenCV's box blur). numpy is imported inside
the functions that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, Sequence

from pydantic import BaseModel, Field

from invokeai_provider.core.fields import LATENT_SCALE_FACTOR
from invokeai_provider.errors import InvokeAIProviderError

if TYPE_CHECKING:
    import numpy as np

BLEND_MODES = Literal["Linear", "Seam"]

# BT.601 luma weights, used to find the seam of least difference between two overlapping tiles.
_LUMA = (0.2989, 0.5870, 0.1140)
# What the seam search treats the energy beyond the overlap's edges as.
_EDGE_ENERGY = 255.0


class TileError(InvokeAIProviderError):
    """Tile geometry or tile images that the tiling rules cannot use; names the node and field when known."""


# --- field types ----------------------------------------------------------------------------------


class TBLR(BaseModel):
    """A box (or per-side amounts) as top, bottom, left, right in pixels."""

    top: int
    bottom: int
    left: int
    right: int


class Tile(BaseModel):
    """Where a tile sits in its image and how far it overlaps each neighbour."""

    coords: TBLR = Field(description="The coordinates of this tile relative to its parent image.")
    overlap: TBLR = Field(description="The amount of overlap with adjacent tiles on each side of this tile.")


# --- tiling arithmetic ----------------------------------------------------------------------------

Span = tuple[int, int]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _grid(rows: Sequence[Span], cols: Sequence[Span]) -> list[Tile]:
    """Tiles for every (row, column) span pair, left to right then top to bottom, with their overlaps.

    A side's overlap is how far the neighbouring span on that side reaches into this one (never negative);
    image edges have none.
    """
    def overlaps(spans: Sequence[Span]) -> list[tuple[int, int]]:
        before = [0] + [max(0, spans[i - 1][1] - spans[i][0]) for i in range(1, len(spans))]
        return [(before[i], before[i + 1] if i + 1 < len(spans) else 0) for i in range(len(spans))]

    row_overlaps, col_overlaps = overlaps(rows), overlaps(cols)
    return [
        Tile(coords=TBLR(top=top, bottom=bottom, left=left, right=right),
             overlap=TBLR(top=o_top, bottom=o_bottom, left=o_left, right=o_right))
        for (top, bottom), (o_top, o_bottom) in zip(rows, row_overlaps)
        for (left, right), (o_left, o_right) in zip(cols, col_overlaps)
    ]


def _fixed_size_spans(size: int, tile: int, overlap: int) -> list[Span]:
    # Step by (tile - overlap); a span that would run past the end is moved back to end at the edge.
    step = tile - overlap
    spans = []
    for i in range(_ceil_div(size - overlap, step)):
        start = i * step
        if start + tile > size:
            start = size - tile
        spans.append((start, start + tile))
    return spans


def calc_tiles_with_overlap(image_height: int, image_width: int, tile_height: int, tile_width: int,
                            overlap: int = 0) -> list[Tile]:
    """Fixed-size tiles at least ``overlap`` apart; the last row and column are shifted to stay inside the
    image, so they overlap their neighbours by more."""
    if image_height < tile_height:
        raise TileError(f"tile_height {tile_height} is larger than image_height {image_height}", field="tile_height")
    if image_width < tile_width:
        raise TileError(f"tile_width {tile_width} is larger than image_width {image_width}", field="tile_width")
    if overlap >= min(tile_height, tile_width):
        raise TileError(f"overlap {overlap} must be less than the tile width and height "
                        f"({tile_width}x{tile_height})", field="overlap")
    return _grid(_fixed_size_spans(image_height, tile_height, overlap),
                 _fixed_size_spans(image_width, tile_width, overlap))


def _even_spans(size: int, count: int, overlap: int, axis: str) -> list[Span]:
    # Tile size: the share of (size + all overlaps) per tile, rounded down to a multiple of 8. The last
    # tile always reaches the image edge.
    if count > 1:
        if overlap > size - LATENT_SCALE_FACTOR * (count - 1):
            raise TileError(f"overlap {overlap} is too large for {count} tiles across image_{axis} {size}",
                            field="overlap")
        tile = LATENT_SCALE_FACTOR * (((size + overlap * (count - 1)) // count) // LATENT_SCALE_FACTOR)
        if overlap >= tile:
            raise TileError(f"overlap {overlap} must be less than the tile {axis} {tile} that {count} tiles across "
                            f"image_{axis} {size} give", field="overlap")
    else:
        tile = size
    spans = []
    for i in range(count):
        start = i * (tile - overlap)
        end = size if i == count - 1 else min(start + tile, size)
        spans.append((start, end))
    return spans


def calc_tiles_even_split(image_height: int, image_width: int, num_tiles_x: int, num_tiles_y: int,
                          overlap: int = 0) -> list[Tile]:
    """``num_tiles_x`` by ``num_tiles_y`` tiles of a size that is a multiple of 8, ``overlap`` apart."""
    for axis, size in (("width", image_width), ("height", image_height)):
        if size % LATENT_SCALE_FACTOR:
            raise TileError(f"image size ({image_width}, {image_height}) must be divisible by {LATENT_SCALE_FACTOR}",
                            field=f"image_{axis}")
    return _grid(_even_spans(image_height, num_tiles_y, overlap, "height"),
                 _even_spans(image_width, num_tiles_x, overlap, "width"))


def _spread_spans(size: int, tile: int, min_overlap: int, axis: str) -> list[Span]:
    # As few tiles as keep min_overlap, spread evenly from edge to edge (starts rounded down).
    tile = min(tile, size)
    if tile == min_overlap:
        raise TileError(f"min_overlap {min_overlap} must be less than image_{axis} {size}", field="min_overlap")
    count = _ceil_div(size - min_overlap, tile - min_overlap)
    starts = [(i * (size - tile)) // (count - 1) if count > 1 else 0 for i in range(count)]
    return [(start, start + tile) for start in starts]


def calc_tiles_min_overlap(image_height: int, image_width: int, tile_height: int, tile_width: int,
                           min_overlap: int = 0) -> list[Tile]:
    """Fixed-size tiles (cut down to the image where it is smaller) that overlap by at least ``min_overlap``,
    the spare overlap shared out between them."""
    if min_overlap >= min(tile_height, tile_width):
        raise TileError(f"min_overlap {min_overlap} must be less than the tile width and height "
                        f"({tile_width}x{tile_height})", field="min_overlap")
    return _grid(_spread_spans(image_height, tile_height, min_overlap, "height"),
                 _spread_spans(image_width, tile_width, min_overlap, "width"))


def calc_tiles_grid(image_height: int, image_width: int, tile_size: int) -> list[Tile]:
    """``tile_size`` squares side by side from the top left corner, none overlapping; the last row and column
    are cut short at the image edge (the grid InvokeAI's ESRGAN and PBR-maps nodes tile with)."""
    if tile_size < 1:
        raise TileError(f"tile_size must be at least 1, got {tile_size}", field="tile_size")
    return _grid([(start, min(start + tile_size, image_height)) for start in range(0, image_height, tile_size)],
                 [(start, min(start + tile_size, image_width)) for start in range(0, image_width, tile_size)])


# --- merging --------------------------------------------------------------------------------------


def box_blur(mask: "np.ndarray", size: int) -> "np.ndarray":
    """OpenCV's normalised box filter (``cv2.blur(mask, (size, size))``) for a 0/1 mask, in numpy.

    The kernel's anchor is at ``size // 2`` and the border mirrors without repeating the edge
    (BORDER_REFLECT_101). Window sums of 0/1 values are exact, so scaling them by ``1 / size**2`` gives
    OpenCV's float64 result bit for bit.
    """
    import numpy as np

    before = size // 2
    after = size - 1 - before
    padded = np.pad(mask, ((before, after), (before, after)), mode="reflect")
    counts = np.pad(np.rint(padded).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    windows = counts[size:, size:] - counts[:-size, size:] - counts[size:, :-size] + counts[:-size, :-size]
    return windows * (1.0 / (size * size))


def seam_blend(existing: "np.ndarray", incoming: "np.ndarray", blend_amount: int, across_rows: bool) -> "np.ndarray":
    """Blends two copies of an overlap region along the path where they differ least.

    The path runs along the overlap (top to bottom for tiles side by side; left to right, found on the
    region turned a quarter, for rows one above the other). ``existing`` is kept before the path and
    ``incoming`` after it; the cut is softened with a ``blend_amount`` box blur. Returns float64 (H, W, C).

    The search keeps InvokeAI's choices so the seam lands on the same pixels: the cost accumulated down
    the overlap adds each row's cheapest of three neighbouring energies, the end column is picked in the
    accumulated cost's last row inside the gutter, and that index is used without the gutter offset.
    """
    import numpy as np

    difference = np.dot(incoming, _LUMA) - np.dot(existing, _LUMA)
    if across_rows:
        difference = np.rot90(difference, 1)
    length, width = difference.shape
    gutter = (blend_amount + 1) // 2
    low, high = gutter, width - gutter - 1  # the path stays in columns low..high
    if high <= low or length < 2:
        raise TileError(f"an overlap of {min(existing.shape[:2])} px is too small for seam blending with "
                        f"blend_amount {blend_amount}: it must be at least {2 * gutter + 2} px",
                        field="blend_amount")
    energy = np.abs(np.gradient(difference, axis=0)) + np.abs(np.gradient(difference, axis=1))
    bordered = np.pad(energy, ((0, 0), (1, 1)), constant_values=_EDGE_ENERGY)
    cheapest = np.minimum(np.minimum(bordered[:, 1:-1], bordered[:, 2:]), bordered[:, :-2])
    cost = np.concatenate([energy[:1], cheapest[1:]]).cumsum(axis=0)[-1]

    path = [0] * length
    path[-1] = int(np.argmin(cost[low:high]))
    for y in range(length - 2, -1, -1):
        left = min(max(path[y + 1] - 1, low), high)
        right = min(max(path[y + 1] + 1, low), high)
        path[y] = left + int(np.argmin(energy[y, left:right + 1]))

    mask = (np.arange(width)[None, :] < np.array(path)[:, None]).astype(np.float64)
    if across_rows:
        mask = np.rot90(mask, 3)
    if blend_amount > 0:
        mask = box_blur(mask, blend_amount)
    mask = mask[..., None]
    return existing * mask + incoming * (1.0 - mask)


def _rows(tiles: Sequence[Tile], images: Sequence["np.ndarray"]) -> list[list[tuple[Tile, "np.ndarray"]]]:
    """Tiles with their images ordered top to bottom, left to right, grouped into rows of equal top and bottom."""
    ordered = sorted(zip(tiles, images), key=lambda pair: (pair[0].coords.top, pair[0].coords.left))
    rows: list[list[tuple[Tile, "np.ndarray"]]] = []
    for pair in ordered:
        coords = pair[0].coords
        if rows and (rows[-1][0][0].coords.top, rows[-1][0][0].coords.bottom) == (coords.top, coords.bottom):
            rows[-1].append(pair)
        else:
            rows.append([pair])
    return rows


def _check_blend(overlap: int, blend_amount: int, side: str) -> None:
    if overlap < blend_amount:
        raise TileError(f"blend_amount {blend_amount} is larger than a {side} overlap of {overlap} px between "
                        "adjacent tiles", field="blend_amount")


def _ramp_mask(height: int, width: int, overlap: int, blend_amount: int, vertical: bool) -> "np.ndarray":
    """Weights of a tile against what is under it: 0 up to the middle of the overlap, a linear ramp of
    ``blend_amount`` px centred there, then 1."""
    import numpy as np

    mask = np.ones((height, width), dtype=np.float64)
    if overlap > 0:
        start = overlap // 2 - blend_amount // 2
        ramp = np.linspace(0.0, 1.0, num=blend_amount)
        if vertical:
            mask[:start, :] = 0.0
            mask[start:start + blend_amount, :] = ramp[:, None]
        else:
            mask[:, :start] = 0.0
            mask[:, start:start + blend_amount] = ramp
    return mask


def _paste(dst: "np.ndarray", src: "np.ndarray", top: int, left: int, mask: "np.ndarray") -> None:
    region = dst[top:top + src.shape[0], left:left + src.shape[1]]
    weights = mask[..., None]
    region[...] = src * weights + region * (1.0 - weights)  # stored back as uint8: truncated, as InvokeAI


def merge_tiles(tiles: Sequence[Tile], images: Sequence["np.ndarray"], blend_mode: str,
                blend_amount: int) -> "np.ndarray":
    """Pastes uint8 (H, W, C) tile images into one image as big as the tiles reach.

    Tiles are taken row by row, left to right; each tile is blended into its row over its left overlap,
    then each row into the image over its top overlap (the first tile's overlap counts for the row).
    """
    import numpy as np

    height = max(tile.coords.bottom for tile in tiles)
    width = max(tile.coords.right for tile in tiles)
    merged = np.zeros((height, width, images[0].shape[-1]), dtype=images[0].dtype)
    for row in _rows(tiles, images):
        first = row[0][0].coords
        row_image = np.zeros((first.bottom - first.top, width, merged.shape[-1]), dtype=merged.dtype)
        for tile, image in row:
            left, right, overlap = tile.coords.left, tile.coords.right, tile.overlap.left
            if overlap > 0:
                _check_blend(overlap, blend_amount, "left")
            if blend_mode == "Linear":
                _paste(row_image, image, 0, left, _ramp_mask(*image.shape[:2], overlap, blend_amount, False))
            elif overlap > 0:
                row_image[:, left:left + overlap] = seam_blend(row_image[:, left:left + overlap], image[:, :overlap],
                                                               blend_amount, across_rows=False)
                row_image[:, left + overlap:right] = image[:, overlap:]
            else:
                row_image[:, left:right] = image
        overlap = row[0][0].overlap.top
        if overlap > 0:
            _check_blend(overlap, blend_amount, "top")
        if blend_mode == "Linear":
            _paste(merged, row_image, first.top, 0, _ramp_mask(*row_image.shape[:2], overlap, blend_amount, True))
        elif overlap > 0:
            merged[first.top:first.top + overlap] = seam_blend(merged[first.top:first.top + overlap],
                                                               row_image[:overlap], blend_amount, across_rows=True)
            merged[first.top + overlap:first.bottom] = row_image[overlap:]
        else:
            merged[first.top:first.bottom] = row_image
    return merged


# --- tiled inference ------------------------------------------------------------------------------


def tiled_inference(run: Callable[[Any], Any], image: Any, out: Any, tiles: Sequence[Tile], scale: int = 1,
                    context: int = 0, channels_last: bool = True,
                    on_tile: Optional[Callable[[int, int], None]] = None) -> Any:
    """``out`` filled with ``run`` applied tile by tile to ``image``; returns ``out``.

    ``image`` and ``out`` are NumPy arrays or torch tensors, (H, W, C) with ``channels_last``, else
    (..., C, H, W); ``out`` is ``scale`` times the image's size and ``run`` maps a crop to its output,
    ``scale`` times the crop's size. Tiles are taken in the order given. Each is run on its box grown by
    ``context`` px on every side (as far as the image reaches), so the network sees its surroundings; of
    the result, the tile's own box is pasted over what is in ``out`` already, less the first half of its
    top and left overlap (in output px, rounded down), which the tile before keeps. ``on_tile(done,
    total)`` is called before the first tile and after each (it may raise to cancel).
    """
    height, width = image.shape[:2] if channels_last else image.shape[-2:]

    def window(top: int, bottom: int, left: int, right: int) -> tuple:
        rows, cols = slice(top, bottom), slice(left, right)
        return (rows, cols) if channels_last else (Ellipsis, rows, cols)

    if on_tile is not None:
        on_tile(0, len(tiles))
    for done, tile in enumerate(tiles, start=1):
        box = tile.coords
        y0, x0 = max(box.top - context, 0), max(box.left - context, 0)
        y1, x1 = min(box.bottom + context, height), min(box.right + context, width)
        result = run(image[window(y0, y1, x0, x1)])
        top = box.top * scale + tile.overlap.top * scale // 2
        left = box.left * scale + tile.overlap.left * scale // 2
        bottom, right = box.bottom * scale, box.right * scale
        oy, ox = y0 * scale, x0 * scale
        out[window(top, bottom, left, right)] = result[window(top - oy, bottom - oy, left - ox, right - ox)]
        if on_tile is not None:
            on_tile(done, len(tiles))
    return out
