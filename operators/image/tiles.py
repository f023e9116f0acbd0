"""Tile nodes: split an image size into overlapping tiles, read a tile's properties, pair tiles with images
and merge tile images back into one image with linear or seam blending.

Type strings, versions, fields, outputs and the tiling arithmetic follow InvokeAI's `invocations/tiles.py`
and `backend/tiles`, so the tile coordinates and overlaps are the ones InvokeAI computes for the same
inputs, and merged pixels agree with InvokeAI's (its NumPy 1.x arithmetic, OpenCV's box blur). numpy and
PIL are imported inside the functions that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import (
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
from invokeai_provider.core.limits import IMAGE_SIDE
from invokeai_provider.errors import field_error
from invokeai_provider.models.image_util.tiling import (
    BLEND_MODES,
    Tile,
    TileError,
    calc_tiles_even_split,
    calc_tiles_min_overlap,
    calc_tiles_with_overlap,
    merge_tiles,
)
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import save_image

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "tiles"
_TAGS = ["tiles"]

# --- field types ----------------------------------------------------------------------------------


class TileWithImage(BaseModel):
    tile: Tile
    image: ImageField


# --- nodes ----------------------------------------------------------------------------------------


def _for_node(node: BaseInvocation, exc: TileError) -> TileError:
    return field_error(TileError, node, exc.field or "?", str(exc))


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

    image_width: int = InputField(ge=1, default=1024, description=_IMAGE_WIDTH, limit=IMAGE_SIDE)
    image_height: int = InputField(ge=1, default=1024, description=_IMAGE_HEIGHT, limit=IMAGE_SIDE)
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

    image_width: int = InputField(ge=1, default=1024, description=_IMAGE_WIDTH, limit=IMAGE_SIDE)
    image_height: int = InputField(ge=1, default=1024, description=_IMAGE_HEIGHT, limit=IMAGE_SIDE)
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

    image_width: int = InputField(ge=1, default=1024, description=_IMAGE_WIDTH, limit=IMAGE_SIDE)
    image_height: int = InputField(ge=1, default=1024, description=_IMAGE_HEIGHT, limit=IMAGE_SIDE)
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
        return save_image(self, context, merged)
