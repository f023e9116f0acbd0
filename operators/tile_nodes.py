"""Tile nodes: split an image size into overlapping tiles, read a tile's properties, pair tiles with images
and merge tile images back into one image with linear or seam blending.

Type strings, versions, fields, outputs and the tiling arithmetic follow InvokeAI's `invocations/tiles.py`
and `backend/tiles`, so the tile coordinates and overlaps are the ones InvokeAI computes for the same
inputs, and merged pixels agree with InvokeAI's (its NumPy 1.x arithmetic, OpenCV's box blur). numpy and
PIL are imported inside the functions that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Sequence

from pydantic import BaseModel, Field

from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.fields import ImageField
from invokeai_provider.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Input,
    InputField,
    OutputField,
    WithBoard,
    WithMetadata,
    invocation,
    invocation_output,
)
from invokeai_provider.operators.primitives import LATENT_SCALE_FACTOR, ImageOutput

if TYPE_CHECKING:
    import numpy as np

    from invokeai_provider.context import InvocationContext

_CATEGORY = "tiles"
_TAGS = ["tiles"]

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


class TileWithImage(BaseModel):
    tile: Tile
    image: ImageField


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


# --- nodes ----------------------------------------------------------------------------------------


def _for_node(node: BaseInvocation, exc: TileError) -> TileError:
    field = exc.field or "?"
    return TileError(f"node {node.id} ({node.get_type()}): field {field}: {exc}", node_id=node.id, field=field)


_IMAGE_WIDTH = "The image width, in pixels, to calculate tiles for."
_IMAGE_HEIGHT = "The image height, in pixels, to calculate tiles for."
_TILE_WIDTH = "The tile width, in pixels."
_TILE_HEIGHT = "The tile height, in pixels."


@invocation_output("calculate_image_tiles_output")
class CalculateImageTilesOutput(BaseInvocationOutput):
    tiles: list[Tile] = OutputField(description="The tiles coordinates that cover a particular image shape.")


@invocation("calculate_image_tiles", title="Calculate Image Tiles", tags=_TAGS, category=_CATEGORY,
            version="1.0.1")
class CalculateImageTilesInvocation(BaseInvocation):
    """Tiles of a fixed size that cover an image size, at least ``overlap`` px apart."""

    image_width: int = InputField(ge=1, default=1024, description=_IMAGE_WIDTH)
    image_height: int = InputField(ge=1, default=1024, description=_IMAGE_HEIGHT)
    tile_width: int = InputField(ge=1, default=576, description=_TILE_WIDTH)
    tile_height: int = InputField(ge=1, default=576, description=_TILE_HEIGHT)
    overlap: int = InputField(
        ge=0, default=128,
        description="The target overlap, in pixels, between adjacent tiles. Adjacent tiles will overlap by at least "
                    "this amount",
    )

    def invoke(self, context: "InvocationContext") -> CalculateImageTilesOutput:
        try:
            tiles = calc_tiles_with_overlap(self.image_height, self.image_width, self.tile_height, self.tile_width,
                                            self.overlap)
        except TileError as exc:
            raise _for_node(self, exc) from None
        return CalculateImageTilesOutput(tiles=tiles)


@invocation("calculate_image_tiles_even_split", title="Calculate Image Tiles Even Split", tags=_TAGS,
            category=_CATEGORY, version="1.1.1")
class CalculateImageTilesEvenSplitInvocation(BaseInvocation):
    """A given number of tiles across and down, sized to multiples of 8 px."""

    image_width: int = InputField(ge=1, default=1024, description=_IMAGE_WIDTH)
    image_height: int = InputField(ge=1, default=1024, description=_IMAGE_HEIGHT)
    num_tiles_x: int = InputField(default=2, ge=1, description="Number of tiles to divide image into on the x axis")
    num_tiles_y: int = InputField(default=2, ge=1, description="Number of tiles to divide image into on the y axis")
    overlap: int = InputField(default=128, ge=0, multiple_of=8,
                              description="The overlap, in pixels, between adjacent tiles.")

    def invoke(self, context: "InvocationContext") -> CalculateImageTilesOutput:
        try:
            tiles = calc_tiles_even_split(self.image_height, self.image_width, self.num_tiles_x, self.num_tiles_y,
                                          self.overlap)
        except TileError as exc:
            raise _for_node(self, exc) from None
        return CalculateImageTilesOutput(tiles=tiles)


@invocation("calculate_image_tiles_min_overlap", title="Calculate Image Tiles Minimum Overlap", tags=_TAGS,
            category=_CATEGORY, version="1.0.1")
class CalculateImageTilesMinimumOverlapInvocation(BaseInvocation):
    """As few fixed-size tiles as keep ``min_overlap``, spread evenly over the image."""

    image_width: int = InputField(ge=1, default=1024, description=_IMAGE_WIDTH)
    image_height: int = InputField(ge=1, default=1024, description=_IMAGE_HEIGHT)
    tile_width: int = InputField(ge=1, default=576, description=_TILE_WIDTH)
    tile_height: int = InputField(ge=1, default=576, description=_TILE_HEIGHT)
    min_overlap: int = InputField(default=128, ge=0, description="Minimum overlap between adjacent tiles, in pixels.")

    def invoke(self, context: "InvocationContext") -> CalculateImageTilesOutput:
        try:
            tiles = calc_tiles_min_overlap(self.image_height, self.image_width, self.tile_height, self.tile_width,
                                           self.min_overlap)
        except TileError as exc:
            raise _for_node(self, exc) from None
        return CalculateImageTilesOutput(tiles=tiles)


@invocation_output("tile_to_properties_output")
class TileToPropertiesOutput(BaseInvocationOutput):
    coords_left: int = OutputField(description="Left coordinate of the tile relative to its parent image.")
    coords_right: int = OutputField(description="Right coordinate of the tile relative to its parent image.")
    coords_top: int = OutputField(description="Top coordinate of the tile relative to its parent image.")
    coords_bottom: int = OutputField(description="Bottom coordinate of the tile relative to its parent image.")
    # Redundant with the coordinates, but a graph would need two math nodes to get them.
    width: int = OutputField(description="The width of the tile. Equal to coords_right - coords_left.")
    height: int = OutputField(description="The height of the tile. Equal to coords_bottom - coords_top.")
    overlap_top: int = OutputField(description="Overlap between this tile and its top neighbor.")
    overlap_bottom: int = OutputField(description="Overlap between this tile and its bottom neighbor.")
    overlap_left: int = OutputField(description="Overlap between this tile and its left neighbor.")
    overlap_right: int = OutputField(description="Overlap between this tile and its right neighbor.")


@invocation("tile_to_properties", title="Tile to Properties", tags=_TAGS, category=_CATEGORY, version="1.0.1")
class TileToPropertiesInvocation(BaseInvocation):
    """A tile's coordinates, size and overlaps as separate integers, for wiring into crop and resize nodes."""

    tile: Tile = InputField(description="The tile to split into properties.")

    def invoke(self, context: "InvocationContext") -> TileToPropertiesOutput:
        coords, overlap = self.tile.coords, self.tile.overlap
        return TileToPropertiesOutput(
            coords_left=coords.left, coords_right=coords.right, coords_top=coords.top, coords_bottom=coords.bottom,
            width=coords.right - coords.left, height=coords.bottom - coords.top,
            overlap_top=overlap.top, overlap_bottom=overlap.bottom, overlap_left=overlap.left,
            overlap_right=overlap.right,
        )


@invocation_output("pair_tile_image_output")
class PairTileImageOutput(BaseInvocationOutput):
    tile_with_image: TileWithImage = OutputField(description="A tile description with its corresponding image.")


@invocation("pair_tile_image", title="Pair Tile with Image", tags=_TAGS, category=_CATEGORY, version="1.0.1")
class PairTileImageInvocation(BaseInvocation):
    """Keeps a processed tile image with its tile, so a collect of them can be merged in any order."""

    image: ImageField = InputField(description="The tile image.")
    tile: Tile = InputField(description="The tile properties.")

    def invoke(self, context: "InvocationContext") -> PairTileImageOutput:
        return PairTileImageOutput(tile_with_image=TileWithImage(tile=self.tile, image=self.image))


@invocation("merge_tiles_to_image", title="Merge Tiles to Image", tags=_TAGS, category=_CATEGORY, version="1.1.1")
class MergeTilesToImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Merges tile images into one RGB image as large as the tiles reach, blending across their overlaps."""

    tiles_with_images: list[TileWithImage] = InputField(description="A list of tile images with tile properties.")
    blend_mode: BLEND_MODES = InputField(default="Seam", description="blending type Linear or Seam", input=Input.Direct)
    blend_amount: int = InputField(
        default=32, ge=0,
        description="The amount to blend adjacent tiles in pixels. Must be <= the amount of overlap between adjacent "
                    "tiles.",
    )

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image

        field = "tiles_with_images"
        if not self.tiles_with_images:
            raise _for_node(self, TileError("expected at least one tile with its image, got none", field=field))
        tiles = [pair.tile for pair in self.tiles_with_images]
        images = []
        for index, pair in enumerate(self.tiles_with_images):
            coords = pair.tile.coords
            if not (0 <= coords.left < coords.right and 0 <= coords.top < coords.bottom):
                raise _for_node(self, TileError(f"item {index}: tile coords {coords.model_dump()} are not a box inside "
                                                "an image", field=field))
            pixels = np.array(context.images.get_pil(pair.image.image_name).convert("RGB"))
            expected = (coords.bottom - coords.top, coords.right - coords.left)
            if pixels.shape[:2] != expected:
                raise _for_node(self, TileError(
                    f"item {index}: image {pair.image.image_name!r} is {pixels.shape[1]}x{pixels.shape[0]} px but its "
                    f"tile is {expected[1]}x{expected[0]} px", field=field))
            images.append(pixels)
        try:
            merged = merge_tiles(tiles, images, self.blend_mode, self.blend_amount)
        except TileError as exc:
            raise _for_node(self, exc) from None
        return ImageOutput.build(context.images.save(Image.fromarray(merged)))
