"""Depth Anything, Segment Anything and Grounding DINO nodes: declarations match InvokeAI, and each runs a tiny
random-weight transformers model from ``<model root>/core/<repo id>`` to results of the right shape."""

from __future__ import annotations


import pytest

from helpers import only_output, put_image, stored_image

from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.core.registry import InvocationRegistry

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

WIDTH, HEIGHT = 56, 40




def _photo(seed=0):
    rng = np.random.RandomState(seed)
    pixels = (rng.rand(HEIGHT, WIDTH, 3) * 255).astype("uint8")
    pixels[10:30, 15:40] = (220, 40, 40)  # a red block on noise: some structure for the model to react to
    return Image.fromarray(pixels)


# --- declarations -------------------------------------------------------------------------------------

# type -> (title, version, category, tags, output type, inputs in InvokeAI's order, defaults)
DECLARED = {
    "depth_anything_depth_estimation": (
        "Depth Anything Depth Estimation", "1.0.0", "controlnet", ["controlnet", "depth", "depth anything"],
        "image_output", ["board", "metadata", "image", "model_size"], {"model_size": "small_v2"}),
    "segment_anything": (
        "Segment Anything", "1.3.0", "segmentation", ["prompt", "segmentation", "sam", "sam2"], "mask_output",
        ["model", "image", "bounding_boxes", "point_lists", "apply_polygon_refinement", "mask_filter"],
        {"bounding_boxes": None, "point_lists": None, "apply_polygon_refinement": True, "mask_filter": "all"}),
    "grounding_dino": (
        "Grounding DINO (Text Prompt Object Detection)", "1.0.0", "segmentation", ["prompt", "object detection"],
        "bounding_box_collection_output", ["model", "prompt", "image", "detection_threshold"],
        {"detection_threshold": 0.3}),
}


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_declaration_matches_invokeai(node_type):
    title, version, category, tags, output, inputs, defaults = DECLARED[node_type]
    cls = InvocationRegistry.get_invocation_class(node_type)
    ui = cls.UIConfig
    assert (ui.title, ui.version, ui.category, ui.tags) == (title, version, category, tags)
    assert cls.get_output_annotation().get_type() == output
    assert list(cls.input_fields()) == inputs
    for name, default in defaults.items():
        assert cls.input_fields()[name].default == default, name


def test_model_choices_match_invokeai():
    from typing import get_args

    from invokeai_provider.operators.controlnet import detection as d
    assert get_args(d.DEPTH_ANYTHING_MODEL_SIZES) == ("large", "base", "small", "small_v2")
    assert d.DEPTH_ANYTHING_MODELS["small_v2"] == "depth-anything/Depth-Anything-V2-Small-hf"
    assert set(get_args(d.SegmentAnythingModelKey)) == set(d.SEGMENT_ANYTHING_MODEL_IDS)
    assert d.SEGMENT_ANYTHING_MODEL_IDS["segment-anything-base"] == "facebook/sam-vit-base"
    assert set(get_args(d.GroundingDinoModelKey)) == {"grounding-dino-tiny", "grounding-dino-base"}
    mask_filter = InvocationRegistry.get_invocation_class("segment_anything").model_fields["mask_filter"]
    assert "highest_box_score" in str(mask_filter.annotation) and "largest" in str(mask_filter.annotation)


def test_nodes_route_to_the_gpu_queue():
    assert all(InvocationRegistry.get_invocation_class(t).UIConfig.gpu for t in DECLARED)



# --- tiny models ----------------------------------------------------------------------------------------


@pytest.fixture
def models_run(tmp_path, run):
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    run.services["models"] = ModelManager(ModelRegistry(str(tmp_path / "models")), device="cpu")
    return run


def _quiet():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return transformers


@pytest.fixture(scope="module")
def tiny_depth(tmp_path_factory):
    torch = pytest.importorskip("torch")
    t = _quiet()
    from invokeai_provider.operators.controlnet.detection import DEPTH_ANYTHING_MODELS, core_folder

    torch.manual_seed(0)
    backbone = t.Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                              image_size=28, patch_size=14, out_features=["stage1", "stage2"],
                              reshape_hidden_states=False)
    config = t.DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 16],
                                   fusion_hidden_size=16, head_hidden_size=8, patch_size=14,
                                   use_pretrained_backbone=False)
    path = tmp_path_factory.mktemp("depth") / core_folder(DEPTH_ANYTHING_MODELS["small_v2"])
    t.DepthAnythingForDepthEstimation(config).eval().save_pretrained(path)
    t.DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=True, ensure_multiple_of=14,
                        do_pad=False).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    torch = pytest.importorskip("torch")
    t = _quiet()
    from invokeai_provider.operators.controlnet.detection import SEGMENT_ANYTHING_MODEL_IDS, core_folder

    torch.manual_seed(0)
    config = t.SamConfig(
        vision_config=t.SamVisionConfig(hidden_size=16, output_channels=8, num_hidden_layers=2, num_attention_heads=2,
                                        mlp_dim=32, image_size=64, patch_size=8, window_size=2,
                                        global_attn_indexes=[1], num_pos_feats=4),
        prompt_encoder_config=t.SamPromptEncoderConfig(hidden_size=8, image_size=64, patch_size=8,
                                                       mask_input_channels=4),
        mask_decoder_config=t.SamMaskDecoderConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                                   mlp_dim=16, iou_head_hidden_dim=8))
    path = tmp_path_factory.mktemp("sam") / core_folder(SEGMENT_ANYTHING_MODEL_IDS["segment-anything-base"])
    t.SamModel(config).eval().save_pretrained(path)
    processor = t.SamProcessor(image_processor=t.SamImageProcessor(size={"longest_edge": 64},
                                                                   pad_size={"height": 64, "width": 64}))
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_grounding_dino(tmp_path_factory):
    torch = pytest.importorskip("torch")
    t = _quiet()
    from invokeai_provider.operators.controlnet.detection import GROUNDING_DINO_MODEL_IDS, core_folder

    torch.manual_seed(0)
    config = t.GroundingDinoConfig(
        backbone_config=t.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1],
                                     window_size=2, out_features=["stage1", "stage2"]),
        text_config=t.BertConfig(vocab_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=16, max_position_embeddings=32),
        d_model=32, num_queries=8, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
        encoder_attention_heads=2, decoder_attention_heads=2, num_feature_levels=2, encoder_n_points=2,
        decoder_n_points=2, max_text_len=32, use_pretrained_backbone=False, use_timm_backbone=False)
    root = tmp_path_factory.mktemp("gdino")
    path = root / core_folder(GROUNDING_DINO_MODEL_IDS["grounding-dino-tiny"])
    t.GroundingDinoForObjectDetection(config).eval().save_pretrained(path)
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "red", "cat", "box"]) + "\n")
    t.GroundingDinoProcessor(image_processor=t.GroundingDinoImageProcessor(size={"shortest_edge": 32,
                                                                                 "longest_edge": 64}),
                             tokenizer=t.BertTokenizer(str(vocab))).save_pretrained(path)
    return path


def _install(models_run, built):
    """Copies a built core model under the run's model root at the same relative folder."""
    import shutil

    root = models_run.services["models"].registry.root
    relative = built.relative_to(built.parents[2])  # core/<org>/<name>
    shutil.copytree(built, root / relative)


# --- depth ----------------------------------------------------------------------------------------------


def test_depth_map_is_greyscale_full_range_and_image_sized(models_run, tiny_depth):
    _install(models_run, tiny_depth)
    out = only_output(models_run, {"type": "depth_anything_depth_estimation", "image": put_image(models_run, "in.png", _photo())})
    depth = stored_image(models_run, out)
    assert depth.mode == "L" and depth.size == (WIDTH, HEIGHT) == (out.width, out.height)
    values = np.asarray(depth)
    assert values.dtype == np.uint8 and values.min() == 0 and values.max() == 255


def test_depth_to_image_normalises_and_handles_flat_input():
    from invokeai_provider.operators.controlnet.detection import depth_to_image

    image = depth_to_image(np.array([[2.0, 4.0], [6.0, 10.0]]))
    assert np.asarray(image).tolist() == [[0, 63], [127, 255]]
    assert np.asarray(depth_to_image(np.full((3, 3), 7.0))).max() == 0


def test_depth_model_missing_names_node_field_and_folder(models_run):
    with pytest.raises(NodeExecutionError, match=r"node n \(depth_anything_depth_estimation\): field model_size: "
                                                 r"no model at .*core/LiheYoung/depth-anything-base-hf"):
        only_output(models_run, {"type": "depth_anything_depth_estimation", "image": put_image(models_run, "in.png", _photo()),
                                 "model_size": "base"})


def test_depth_without_model_service_is_a_clear_error(run):
    run.services.pop("models", None)
    with pytest.raises(NodeExecutionError, match=r"field model_size: no model service"):
        only_output(run, {"type": "depth_anything_depth_estimation", "image": put_image(run, "in.png", _photo())})


def test_depth_model_stays_in_the_cache(models_run, tiny_depth):
    _install(models_run, tiny_depth)
    image = put_image(models_run, "in.png", _photo())
    cache = models_run.services["models"].cache
    only_output(models_run, {"type": "depth_anything_depth_estimation", "image": image})
    misses = cache.stats.misses
    only_output(models_run, {"type": "depth_anything_depth_estimation", "image": image})
    assert cache.stats.misses == misses and any(k.startswith("core:") for k in cache.keys())


# --- segment anything -----------------------------------------------------------------------------------

BOX_A = {"x_min": 2, "y_min": 3, "x_max": 30, "y_max": 20, "score": 0.4}
BOX_B = {"x_min": 12, "y_min": 10, "x_max": 50, "y_max": 38, "score": 0.9}


def _mask(models_run, out):
    from safetensors.torch import load

    return load(models_run.store.read("tensors", out.mask.tensor_name + ".safetensors"))["tensor"]


def _segment(models_run, **fields):
    out = only_output(models_run, {"type": "segment_anything", "model": "segment-anything-base",
                                   "image": put_image(models_run, "in.png", _photo()), **fields})
    mask = _mask(models_run, out)
    assert tuple(mask.shape) == (1, HEIGHT, WIDTH) and (out.width, out.height) == (WIDTH, HEIGHT)
    assert str(mask.dtype) == "torch.bool"
    return mask[0]


def test_sam_without_prompts_is_an_empty_mask(models_run):
    mask = _segment(models_run)  # no model needed: InvokeAI returns an empty mask without loading it
    assert not mask.any()


@pytest.mark.parametrize("refine", [True, False])
def test_sam_boxes_give_an_image_sized_mask(models_run, tiny_sam, refine):
    _install(models_run, tiny_sam)
    mask = _segment(models_run, bounding_boxes=[BOX_A, BOX_B], apply_polygon_refinement=refine)
    assert mask.any()


def test_sam_mask_filters(models_run, tiny_sam):
    _install(models_run, tiny_sam)
    boxes = [BOX_A, BOX_B]
    every = _segment(models_run, bounding_boxes=boxes, mask_filter="all")
    largest = _segment(models_run, bounding_boxes=boxes, mask_filter="largest")
    best = _segment(models_run, bounding_boxes=boxes, mask_filter="highest_box_score")
    only_b = _segment(models_run, bounding_boxes=[BOX_B])
    only_a = _segment(models_run, bounding_boxes=[BOX_A])
    # "all" is the union of the per-box masks; the filters pick one of them
    assert (every == (only_a | only_b)).all()
    assert (best == only_b).all()  # BOX_B has the higher score
    assert int(largest.sum()) == max(int(only_a.sum()), int(only_b.sum()))
    assert not (largest & ~every).any()


def test_sam_points_and_padding(models_run, tiny_sam):
    _install(models_run, tiny_sam)
    points = [{"points": [{"x": 20, "y": 15, "label": 1}, {"x": 25, "y": 18, "label": 1}]},
              {"points": [{"x": 45, "y": 30, "label": 1}]}]
    assert _segment(models_run, point_lists=points).shape == (HEIGHT, WIDTH)
    assert _segment(models_run, point_lists=points, bounding_boxes=[BOX_A, BOX_B]).shape == (HEIGHT, WIDTH)


def test_sam_rejects_mismatched_prompts_and_score_filter_without_boxes(models_run, tiny_sam):
    _install(models_run, tiny_sam)
    with pytest.raises(NodeExecutionError, match=r"node n \(segment_anything\): field point_lists: expected one"):
        _segment(models_run, bounding_boxes=[BOX_A, BOX_B], point_lists=[{"points": [{"x": 1, "y": 1, "label": 1}]}])
    with pytest.raises(NodeExecutionError, match=r"field mask_filter: highest_box_score needs bounding_boxes"):
        _segment(models_run, point_lists=[{"points": [{"x": 1, "y": 1, "label": 1}]}], mask_filter="highest_box_score")


def test_sam_model_missing_names_field_and_folder(models_run):
    with pytest.raises(NodeExecutionError, match=r"node n \(segment_anything\): field model: no model at "
                                                 r".*core/facebook/sam-vit-huge"):
        _segment(models_run, model="segment-anything-huge", bounding_boxes=[BOX_A])


def test_sam2_without_torchvision_is_a_clear_error(models_run):
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed")
    with pytest.raises(NodeExecutionError, match=r"node n \(segment_anything\): field model: segment-anything-2-tiny "
                                                 r"is a SAM2 model: .*needs torchvision"):
        _segment(models_run, model="segment-anything-2-tiny", bounding_boxes=[BOX_A])


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory):
    """A tiny random-weight SAM2 (Hiera backbone, 64 px input) where torchvision imports (Sam2Processor
    needs it; the test command's CPU torch has none)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision", reason="transformers' Sam2Processor needs torchvision")
    t = _quiet()
    from invokeai_provider.operators.controlnet.detection import SEGMENT_ANYTHING_MODEL_IDS, core_folder

    torch.manual_seed(0)
    backbone = t.Sam2HieraDetConfig(
        hidden_size=8, num_attention_heads=1, image_size=[64, 64], patch_kernel_size=[7, 7], patch_stride=[4, 4],
        patch_padding=[3, 3], query_stride=[2, 2], window_positional_embedding_background_size=[2, 2],
        num_query_pool_stages=3, blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 2], global_attention_blocks=[3])
    config = t.Sam2Config(
        vision_config=t.Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
                                         backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]], fpn_hidden_size=16),
        prompt_encoder_config=t.Sam2PromptEncoderConfig(hidden_size=16, image_size=64, patch_size=16,
                                                        mask_input_channels=4),
        mask_decoder_config=t.Sam2MaskDecoderConfig(hidden_size=16, mlp_dim=32, num_attention_heads=2,
                                                    iou_head_hidden_dim=16))
    path = tmp_path_factory.mktemp("sam2") / core_folder(SEGMENT_ANYTHING_MODEL_IDS["segment-anything-2-tiny"])
    t.Sam2Model(config).eval().save_pretrained(path)
    t.Sam2Processor(image_processor=t.Sam2ImageProcessorFast(size={"height": 64, "width": 64})).save_pretrained(path)
    return path


def test_sam2_boxes_and_points_give_image_sized_masks(models_run, tiny_sam2):
    _install(models_run, tiny_sam2)
    boxes = _segment(models_run, model="segment-anything-2-tiny", bounding_boxes=[BOX_A, BOX_B])
    points = _segment(models_run, model="segment-anything-2-tiny",
                      point_lists=[{"points": [{"x": 20, "y": 15, "label": 1}]}])
    assert boxes.any() and points.any()
    largest = _segment(models_run, model="segment-anything-2-tiny", bounding_boxes=[BOX_A, BOX_B],
                       mask_filter="largest")
    assert largest.sum() <= boxes.sum() and not (largest & ~boxes).any()  # one object's mask, inside the union


def test_polygon_refinement_fills_holes_and_drops_islands():
    from invokeai_provider.operators.controlnet.detection import refine_to_polygon

    mask = np.zeros((20, 20), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5:8, 5:8] = False  # a hole
    mask[16:18, 16:18] = True  # an island
    refined = refine_to_polygon(mask)
    assert refined[6, 6] and not refined[17, 17] and refined[2:12, 2:12].all()
    assert not refine_to_polygon(np.zeros((4, 4), dtype=bool)).any()


# --- grounding dino -------------------------------------------------------------------------------------


def _detect(models_run, threshold):
    return only_output(models_run, {"type": "grounding_dino", "model": "grounding-dino-tiny", "prompt": "a red box",
                                    "image": put_image(models_run, "in.png", _photo()), "detection_threshold": threshold})


def test_grounding_dino_boxes_lie_inside_the_image_above_the_threshold(models_run, tiny_grounding_dino):
    _install(models_run, tiny_grounding_dino)
    every = _detect(models_run, 0.0).collection
    assert every, "a threshold of 0 keeps every query of the tiny model"
    scores = sorted(b.score for b in every)
    assert [b.score for b in every] == sorted(scores, reverse=True)
    for box in every:
        assert 0 <= box.x_min <= box.x_max <= WIDTH and 0 <= box.y_min <= box.y_max <= HEIGHT
    threshold = scores[len(scores) // 2]
    kept = _detect(models_run, threshold).collection
    assert kept and all(b.score > threshold for b in kept) and len(kept) < len(every)
    out = _detect(models_run, threshold).model_dump(mode="json")  # InvokeAI's JSON shape
    assert out["type"] == "bounding_box_collection_output"
    assert set(out["collection"][0]) == {"x_min", "x_max", "y_min", "y_max", "score"}


def test_grounding_dino_model_missing_names_field_and_folder(models_run):
    with pytest.raises(NodeExecutionError, match=r"node n \(grounding_dino\): field model: no model at "
                                                 r".*core/IDEA-Research/grounding-dino-base"):
        only_output(models_run, {"type": "grounding_dino", "model": "grounding-dino-base", "prompt": "cat",
                                 "image": put_image(models_run, "in.png", _photo())})
