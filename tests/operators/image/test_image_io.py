"""save_image: how every image-producing node stores its result (board, metadata, category, PNG modes)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from helpers import only_output, put_image, run_image_records, run_nodes
from PIL import Image

from invokeai_provider.core.context import METADATA_CHUNK
from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.operators.image.io import ImageNodeError


def _records(run) -> dict[str, dict]:
    return {entry["image_name"]: entry for entry in run_image_records(run.store)}


@pytest.fixture
def rgba(run) -> dict:
    return put_image(run, "rgba.png", np.full((4, 6, 4), 200, np.uint8))


def test_mask_nodes_store_mask_images_and_the_others_general_ones(run, rgba):
    state = run_nodes(run, {"mask": {"type": "tomask", "image": rgba},
                            "crop": {"type": "img_crop", "image": rgba, "width": 2, "height": 3}})
    [mask], [crop] = state.outputs_of("mask"), state.outputs_of("crop")
    records = _records(run)
    assert records[mask.image.image_name]["image_category"] == "mask"
    assert records[crop.image.image_name]["image_category"] == "general"
    assert (crop.width, crop.height) == (2, 3)


def test_the_nodes_board_and_metadata_reach_the_record_and_the_png(run, rgba):
    out = only_output(run, {"type": "img_crop", "image": rgba, "width": 2, "height": 2,
                            "board": {"board_id": "b-1"}, "metadata": {"seed": 7}})
    assert _records(run)[out.image.image_name]["board_id"] == "b-1"
    png = Image.open(io.BytesIO(run.store.read("images", out.image.image_name)))
    assert json.loads(png.info[METADATA_CHUNK]) == {"seed": 7}


def test_a_32_bit_result_is_stored_as_16_bit_and_a_mode_png_lacks_is_an_error(run, rgba):
    out = only_output(run, {"type": "img_conv", "image": rgba, "mode": "I"})
    stored = Image.open(io.BytesIO(run.store.read("images", out.image.image_name)))
    assert stored.mode == "I;16" and np.asarray(stored).max() == 200
    with pytest.raises(NodeExecutionError) as info:
        run_nodes(run, {"n": {"type": "img_conv", "image": rgba, "mode": "CMYK"}})
    assert isinstance(info.value.cause, ImageNodeError) and info.value.cause.field == "mode"
