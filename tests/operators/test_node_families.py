"""`invokeai-airflow nodes --json` against InvokeAI 6.11's node families (reference/invokeai.md §1.3).

The families are written out here, so the test needs no file outside the clone; where the shared reference
sits beside the clone, the lists are checked against it too, so they cannot drift from it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from invokeai_provider.cli.app import main
from invokeai_provider.operators import NODE_FAMILIES

FAMILIES: dict[str, set[str]] = {
    "Image ops": {
        "blank_image", "color_correct", "crop_image_to_bounding_box", "decode_watermark", "img_blur", "img_chan",
        "img_channel_multiply", "img_channel_offset", "img_conv", "img_crop", "img_hue_adjust",
        "img_hue_adjust_oklch", "img_ilerp", "img_lerp", "img_mul", "img_noise", "img_nsfw", "img_pad_crop",
        "img_paste", "img_resize", "img_scale", "img_watermark", "invokeai_ealightness", "invokeai_img_blend",
        "invokeai_img_composite", "invokeai_img_dilate_erode", "invokeai_img_enhance",
        "invokeai_img_hue_adjust_plus", "invokeai_img_val_thresholds", "paste_image_into_bounding_box",
        "save_image", "save_image_to_file", "show_image", "unsharp_mask", "unsharp_mask_oklab"},
    "Inpaint / infill": {"cv_inpaint", "infill_cv2", "infill_lama", "infill_patchmatch", "infill_rgba", "infill_tile"},
    "Canvas helpers": {"canvas_output", "canvas_paste_back", "canvas_v2_mask_and_crop", "image_panel_layout"},
    "Mask ops": {
        "alpha_mask_to_tensor", "apply_mask_to_image", "apply_tensor_mask_to_image", "create_denoise_mask",
        "create_gradient_mask", "expand_mask_with_fade", "get_image_mask_bounding_box", "image_mask_to_tensor",
        "invert_tensor_mask", "mask_combine", "mask_edge", "mask_from_id", "rectangle_mask", "tensor_mask_to_image",
        "tomask"},
    "Tiles / upscale": {
        "calculate_image_tiles", "calculate_image_tiles_even_split", "calculate_image_tiles_min_overlap",
        "esrgan", "merge_tiles_to_image", "pair_tile_image", "spandrel_image_to_image",
        "spandrel_image_to_image_autoscale", "tile_to_properties"},
    "ControlNet preprocessors": {
        "canny_edge_detection", "color_map", "content_shuffle", "depth_anything_depth_estimation",
        "dw_openpose_detection", "hed_edge_detection", "heuristic_resize", "lineart_anime_edge_detection",
        "lineart_edge_detection", "mediapipe_face_detection", "mlsd_detection", "normal_map", "pbr_maps",
        "pidi_edge_detection"},
    "SD1/SD2/SDXL core (UNet pipeline)": {
        "clip_skip", "compel", "denoise_latents", "denoise_latents_meta", "freeu", "i2l", "ideal_size", "l2i",
        "lora_collection_loader", "lora_loader", "lora_selector", "main_model_loader", "model_identifier", "noise",
        "scheduler", "sdxl_compel_prompt", "sdxl_lora_collection_loader", "sdxl_lora_loader", "sdxl_model_loader",
        "sdxl_refiner_compel_prompt", "sdxl_refiner_model_loader", "seamless", "tiled_multi_diffusion_denoise_latents",
        "vae_loader"},
    "ControlNet / IP-Adapter / T2I-Adapter (SD-family conditioning)": {"controlnet", "ip_adapter", "t2i_adapter"},
    "Segmentation / face": {"face_identifier", "face_mask_detection", "face_off", "grounding_dino",
                            "segment_anything"},
    "FLUX.1": {
        "flux_control_lora_loader", "flux_controlnet", "flux_denoise", "flux_denoise_meta", "flux_fill",
        "flux_ip_adapter", "flux_kontext", "flux_kontext_image_prep", "flux_lora_collection_loader",
        "flux_lora_loader", "flux_model_loader", "flux_redux", "flux_text_encoder", "flux_vae_decode",
        "flux_vae_encode"},
    "Z-Image": {
        "z_image_control", "z_image_denoise", "z_image_denoise_meta", "z_image_i2l", "z_image_l2i",
        "z_image_lora_collection_loader", "z_image_lora_loader", "z_image_model_loader",
        "z_image_seed_variance_enhancer", "z_image_text_encoder"},
    "CogView4": {"cogview4_denoise", "cogview4_i2l", "cogview4_l2i", "cogview4_model_loader", "cogview4_text_encoder"},
    "SD3 / SD3.5": {"sd3_denoise", "sd3_i2l", "sd3_l2i", "sd3_model_loader", "sd3_text_encoder"},
    "FLUX.2 (Klein / Dev)": {
        "flux2_denoise", "flux2_dev_lora_collection_loader", "flux2_dev_lora_loader", "flux2_dev_model_loader",
        "flux2_dev_text_encoder", "flux2_klein_lora_collection_loader", "flux2_klein_lora_loader",
        "flux2_klein_model_loader", "flux2_klein_text_encoder", "flux2_vae_decode", "flux2_vae_encode"},
}
# Not built yet, each named; this set only shrinks.
NOT_YET: set[str] = set()

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "invokeai.md"


@pytest.fixture(scope="module")
def listed() -> set[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["nodes", "--json"]) == 0
    return {node["type"] for node in json.loads(out.getvalue())}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_node_of_the_family_is_listed(family: str, listed: set[str]) -> None:
    missing = sorted(FAMILIES[family] - listed - NOT_YET)
    assert not missing, f"{family}: not listed by `invokeai-airflow nodes --json`: {missing}"


def test_nodes_marked_not_yet_are_really_missing(listed: set[str]) -> None:
    built = sorted(NOT_YET & listed)
    assert not built, f"built now, take them out of NOT_YET: {built}"


@pytest.mark.skipif(not REFERENCE.is_file(), reason="the shared reference is not beside this clone")
def test_the_families_are_those_of_the_reference() -> None:
    text = REFERENCE.read_text()
    for family, types in FAMILIES.items():
        heading = re.search(rf"^#### {re.escape(family)} — (\d+)\n\n(.+?)\n", text, re.M)
        assert heading, f"no family {family!r} in {REFERENCE}"
        in_reference = set(re.findall(r"`([a-z0-9_]+)`→", heading.group(2)))
        assert in_reference == types and len(types) == int(heading.group(1)), family


# Imported by DAG parsing (the families) or by node modules at module level (the helpers): none may load a heavy
# library, which belongs inside invoke() and the loaders.
LIGHT_MODULES = [f"invokeai_provider.operators.{name}" for name in NODE_FAMILIES] + [
    "invokeai_provider.operators.image.io", "invokeai_provider.models.model_manager.core_models",
    "invokeai_provider.models.annotators.checkpoint", "invokeai_provider.models.annotators.dw_openpose",
    "invokeai_provider.models.annotators.mediapipe_face"]
HEAVY = ("torch", "diffusers", "transformers", "cv2", "patchmatch", "onnxruntime", "imwatermark", "mediapipe")
IMPORT_EACH = """
import importlib, json, sys
heavy, found = sys.argv[1].split(","), {}
for name in sys.argv[2:]:
    importlib.import_module(name)
    found[name] = [m for m in heavy if m in sys.modules]
    if found[name]:
        break
print(json.dumps(found))
"""


def test_node_modules_and_their_helpers_import_no_heavy_library() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORT_EACH, ",".join(HEAVY), *LIGHT_MODULES], capture_output=True,
                          text=True, check=True)
    found = json.loads(done.stdout)
    assert not any(found.values()), {name: loaded for name, loaded in found.items() if loaded}
    assert list(found) == LIGHT_MODULES


def test_the_watermark_code_imports_no_torch_or_invisible_watermark() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORT_EACH, "torch,imwatermark",
                           "invokeai_provider.models.image_util.watermark"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == {"invokeai_provider.models.image_util.watermark": []}
