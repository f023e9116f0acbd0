"""The model service nodes use (``context.services["models"]``): registry lookups and cached loading.

Main models load one submodel at a time (unet, text encoders, tokenizers, vae, scheduler config), as
InvokeAI's loaders do. A single-file checkpoint is converted once into a diffusers folder beside the
registry (``<model root>/converted/<key>``, written atomically), so every later load reads the same
layout. The conversion needs a diffusers config folder of the checkpoint's architecture: the record's
``config_path`` (``--config``) when given, else the bundled one for its probed base/variant/prediction type
(``arch_configs``), written once to ``<model root>/configs/<base>-<variant>-<prediction>``.

A remote model root (S3) is read through the host's disk cache: the files are held in it while they are
loaded, so eviction never removes them mid-read; the converted folder is a cache entry of its own (keyed by
the model's hash) and the architecture configs go to ``<cache dir>/configs``: nothing is written back to S3.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from invokeai_provider.core.fields import ModelIdentifierField
from invokeai_provider.core.taxonomy import (
    BaseModelType,
    ModelType,
    ModelVariantType,
    SchedulerPredictionType,
    SubModelType,
)
from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.models.model_manager.configs import ModelConfig, ModelFormat
from invokeai_provider.models.model_manager.ram_cache import ModelCache
from invokeai_provider.models.model_manager.registry import ModelRegistry, UnknownModelError

PIPELINE_CLASSES = {
    BaseModelType.StableDiffusion1: "StableDiffusionPipeline",
    BaseModelType.StableDiffusion2: "StableDiffusionPipeline",
    BaseModelType.StableDiffusionXL: "StableDiffusionXLPipeline",
    BaseModelType.StableDiffusionXLRefiner: "StableDiffusionXLImg2ImgPipeline",
}


def main_submodels(base: BaseModelType) -> tuple[SubModelType, ...]:
    """The submodels a text-to-image run of a main model of this base loads."""
    parts = (SubModelType.Tokenizer, SubModelType.TextEncoder, SubModelType.UNet, SubModelType.VAE,
             SubModelType.Scheduler)
    if base is BaseModelType.StableDiffusionXL:
        return (*parts, SubModelType.Tokenizer2, SubModelType.TextEncoder2)
    if base is BaseModelType.StableDiffusionXLRefiner:  # the refiner has only the second text encoder
        return (SubModelType.Tokenizer2, SubModelType.TextEncoder2, SubModelType.UNet, SubModelType.VAE,
                SubModelType.Scheduler)
    if base is BaseModelType.StableDiffusion3:  # CLIP-L, CLIP-G, T5-XXL, the transformer
        return (SubModelType.Tokenizer, SubModelType.TextEncoder, SubModelType.Tokenizer2, SubModelType.TextEncoder2,
                SubModelType.Tokenizer3, SubModelType.TextEncoder3, SubModelType.Transformer, SubModelType.VAE,
                SubModelType.Scheduler)
    if base is BaseModelType.CogView4:  # GLM and its tokenizer, the transformer
        return (SubModelType.Tokenizer, SubModelType.TextEncoder, SubModelType.Transformer, SubModelType.VAE,
                SubModelType.Scheduler)
    if base is BaseModelType.Flux2:  # Qwen3 and its tokenizer, the transformer (a BFL single file: only it)
        return (SubModelType.Tokenizer, SubModelType.TextEncoder, SubModelType.Transformer, SubModelType.VAE,
                SubModelType.Scheduler)
    if base is BaseModelType.Flux:  # CLIP-L, T5-XXL, the transformer
        return (SubModelType.Tokenizer, SubModelType.TextEncoder, SubModelType.Tokenizer2, SubModelType.TextEncoder2,
                SubModelType.Transformer, SubModelType.VAE, SubModelType.Scheduler)
    return parts


# What a main model's model_index.json may name for a submodel, by library: the classes are looked up there, so a
# model folder (data) can never make the loader import anything else
LOADABLE_CLASSES = {
    "transformers": {"CLIPTokenizer", "CLIPTokenizerFast", "CLIPTextModel", "CLIPTextModelWithProjection",
                     "T5TokenizerFast", "T5Tokenizer", "T5EncoderModel",
                     # CogView4's GLM and its tokenizer (transformers 5 saves a fast tokenizer as TokenizersBackend)
                     "GlmModel", "PreTrainedTokenizerFast", "TokenizersBackend"},
    "diffusers": {"UNet2DConditionModel", "AutoencoderKL", "FluxTransformer2DModel", "SD3Transformer2DModel",
                  "CogView4Transformer2DModel"},
}

# Parts a main may be published without, and where a graph takes them from then
OPTIONAL_PARTS = {
    (BaseModelType.StableDiffusion3, part): "SD3.5 folders may leave T5-XXL out; select a T5 encoder model in "
    "sd3_model_loader's t5_encoder_model, or leave sd3_text_encoder's t5_encoder unconnected to encode without T5"
    for part in (SubModelType.Tokenizer3, SubModelType.TextEncoder3)}


class ModelLoadError(InvokeAIProviderError):
    """A registered model could not be loaded; the message names the model and submodel."""


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cache_budget_bytes(option: str, override_gb: Optional[float] = None) -> int:
    """A cache budget in bytes: ``override_gb`` when given, else the ``[invokeai]`` option (in GiB); see
    `invokeai_provider.config.Settings.cache_bytes`."""
    from invokeai_provider.config import settings

    return settings().cache_bytes(option, override_gb)


class ModelManager:
    def __init__(self, registry: ModelRegistry, cache: Optional[ModelCache] = None, *,
                 device: Optional[str] = None, dtype: Any = None) -> None:
        self.registry = registry
        self.device = device or default_device()
        self.cache = cache or ModelCache(ram_bytes=cache_budget_bytes("ram_cache_gb"),
                                         vram_bytes=cache_budget_bytes("vram_cache_gb"),
                                         execution_device=self.device)
        self._dtype = dtype
        self._dtype_given = dtype is not None
        self._convert_lock = threading.Lock()

    @property
    def dtype(self) -> Any:
        import torch

        if self._dtype is None:
            self._dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        return self._dtype

    def dtype_for(self, config: ModelConfig) -> Any:
        """FLUX's models, and T5 encoders (which overflow in float16), in bfloat16 on a GPU, as InvokeAI runs them,
        unless a dtype was given; the others in `dtype`."""
        import torch

        if not self._dtype_given and self.device.startswith("cuda") and (
                config.base in (BaseModelType.Flux, BaseModelType.StableDiffusion3)
                or config.type is ModelType.T5Encoder
                or config.base is BaseModelType.CogView4  # CogView4: InvokeAI forces bf16 (float16 gives black)
                or config.base is BaseModelType.ZImage or config.type is ModelType.Qwen3Encoder  # as InvokeAI's
                or config.base is BaseModelType.Flux2 or config.type is ModelType.MistralEncoder):  # FLUX.2: bfloat16
            return torch.bfloat16
        return self.dtype

    # --- lookups (what InvokeAI's context.models offers) -----------------------------------------

    def exists(self, key: str) -> bool:
        try:
            self.registry.get(key)
            return True
        except UnknownModelError:
            return False

    def find_embedding(self, name: str, base: BaseModelType) -> Optional[ModelConfig]:
        """The textual-inversion model a prompt's ``<name>`` trigger refers to, for this base."""
        for config in self.registry.all():
            if config.type is ModelType.TextualInversion and config.name == name and config.base is base:
                return config
        return None

    def get_config(self, ref: str | Mapping[str, Any] | ModelIdentifierField) -> ModelConfig:
        if isinstance(ref, ModelIdentifierField):
            ref = ref.model_dump(mode="json")
        return self.registry.resolve(ref)

    # --- loading ----------------------------------------------------------------------------------

    @contextmanager
    def load(self, identifier: ModelIdentifierField, submodel: Optional[SubModelType] = None) -> Iterator[Any]:
        """The submodel on the execution device for the duration of the block (cached across calls)."""
        config = self.get_config(identifier)
        part = submodel or identifier.submodel_type
        cache_key = self.cache_key(config, part)
        with self.cache.use(cache_key, lambda: self._build(config, part),
                            on_storage_device=self.runs_on_cpu(config, part)) as model:
            yield model

    @staticmethod
    def runs_on_cpu(config: ModelConfig, part: Optional[SubModelType]) -> bool:
        """A T5 encoder (a FLUX main's or a standalone one) with ``[invokeai] t5_encoder_device = cpu``."""
        from invokeai_provider.config import settings

        main_t5 = config.type is ModelType.Main and (config.base, part) in (
            (BaseModelType.Flux, SubModelType.TextEncoder2), (BaseModelType.StableDiffusion3, SubModelType.TextEncoder3))
        t5 = main_t5 or (config.type is ModelType.T5Encoder and part is not SubModelType.Tokenizer2)
        return t5 and settings("t5_encoder_device").t5_encoder_device == "cpu"

    def preload(self, ref: str | Mapping[str, Any]) -> list[str]:
        """Loads a model (every submodel of a main model) into the cache and onto the execution device, so the
        first task using it finds it warm. Returns the cache keys it holds."""
        config = self.get_config(ref)
        from invokeai_provider.models.model_manager.part_loaders import preload_parts

        from invokeai_provider.models.text_encoders import qwen3
        from invokeai_provider.models.z_image import loading as z_image

        handled = qwen3.QWEN3_PARTS if config.type in (ModelType.Qwen3Encoder, ModelType.MistralEncoder) else \
            z_image.preload_parts(config) if z_image.handles(config) else \
            preload_parts(config)  # T5, CLIP, BFL FLUX files (a single-file FLUX main is its transformer)
        parts: list[Optional[SubModelType]] = list(handled) if handled is not None else \
            list(main_submodels(config.base)) if config.type is ModelType.Main else [None]
        keys = []
        for part in parts:
            key = self.cache_key(config, part)
            with self.cache.use(key, lambda part=part: self._build(config, part),
                                on_storage_device=self.runs_on_cpu(config, part)):
                keys.append(key)
        return keys

    @staticmethod
    def cache_key(config: ModelConfig, part: Optional[SubModelType] = None) -> str:
        """The RAM/VRAM cache's key; with the hash, so a model re-installed under the same key is not served
        stale."""
        return f"{config.key}:{config.hash}:{part.value if part else 'model'}"

    def _load_qwen3(self, config: ModelConfig, part: Optional[SubModelType]) -> Any:
        from invokeai_provider.models.model_manager.quantized import refusal
        from invokeai_provider.models.text_encoders import qwen3

        refused = refusal(config.type, config.format, f"model {config.name!r} ({config.key})", config.base)
        if refused:
            raise ModelLoadError(refused)
        with self.registry.local_model(config) as local:
            return qwen3.load_part(config, part, local.path, local.config_path, self.dtype_for(config))

    def _load_mistral(self, config: ModelConfig, part: Optional[SubModelType]) -> Any:
        from invokeai_provider.models.text_encoders import mistral

        with self.registry.local_model(config) as local:
            return mistral.load_part(config, part, local.path, local.config_path, self.dtype_for(config))

    def _build(self, config: ModelConfig, part: Optional[SubModelType]) -> Any:
        from invokeai_provider.models.model_manager import part_loaders

        try:
            from invokeai_provider.models.z_image import loading as z_image

            if config.type is ModelType.Qwen3Encoder:  # Z-Image's and FLUX.2 Klein's text encoder
                return self._load_qwen3(config, part)
            if config.type is ModelType.MistralEncoder:  # FLUX.2 [dev]'s text encoder
                return self._load_mistral(config, part)
            if z_image.handles(config):  # Z-Image mains, LoRAs and ControlNets
                return z_image.load(self.registry, config, part, self.dtype_for(config))
            if part_loaders.handles(config):  # T5 encoders, CLIP embeds, BFL FLUX VAEs; quantized ones refused
                return part_loaders.load(self.registry, config, part, self.dtype_for(config))
            if config.base is BaseModelType.Flux2:  # FLUX.2 mains (folders, BFL files) and VAEs
                from invokeai_provider.models.flux2.loading import load as load_flux2

                return load_flux2(self.registry, config, part, self.dtype_for(config))
            if config.type is ModelType.Main:
                return self._load_main_part(config, part)
            if config.type is ModelType.VAE:
                return self._load_vae(config)
            if config.type is ModelType.ControlLoRa:  # BFL names -> diffusers', once per load
                from invokeai_provider.models.flux.control_lora import load_control_lora

                with self.registry.local_model(config) as local:
                    return load_control_lora(local.path)
            if config.type is ModelType.LoRA:
                from invokeai_provider.models.patches.lora import load_lora_file

                with self.registry.local_model(config) as local:
                    tensors = load_lora_file(local.path)
                if config.base is BaseModelType.Flux:  # BFL/XLabs layer names -> diffusers', once per load
                    from invokeai_provider.models.flux.lora_conversion import to_diffusers_names

                    return to_diffusers_names(tensors)
                return tensors
            if config.type is ModelType.ControlNet and config.base is BaseModelType.Flux:
                from invokeai_provider.models.flux.controlnet import load_controlnet

                with self.registry.local_model(config) as local:
                    return load_controlnet(local.path, self.dtype_for(config))
            if config.type is ModelType.ControlNet:  # SD1/SD2/SDXL, a diffusers folder or a single file
                return self._load_sd_controlnet(config)
            if config.type is ModelType.T2IAdapter:
                from diffusers import T2IAdapter

                with self.registry.local_model(config) as local:
                    return T2IAdapter.from_pretrained(local.path, local_files_only=True, torch_dtype=self.dtype).eval()
            if config.type in (ModelType.SigLIP, ModelType.FluxRedux):
                return self._load_redux_part(config)
            if config.type is ModelType.CLIPVision:  # as InvokeAI: the encoder alone, its processor is the default
                from invokeai_provider.models.image_encoders.clip_vision import load_clip_vision

                with self.registry.local_model(config) as local:
                    return load_clip_vision(local.path, self.dtype)
            if config.type is ModelType.IPAdapter and config.base is BaseModelType.Flux:
                from invokeai_provider.models.flux.ip_adapter import load_ip_adapter

                with self.registry.local_model(config) as local:
                    return load_ip_adapter(local.path, self.dtype_for(config))
            if config.type is ModelType.IPAdapter:  # SD1/SD2/SDXL: InvokeAI's folder or the original single file
                from invokeai_provider.models.stable_diffusion.ip_adapter import load_ip_adapter as load_sd_ip_adapter

                with self.registry.local_model(config) as local:
                    return load_sd_ip_adapter(local.path, self.dtype)
            if config.type is ModelType.SpandrelImageToImage:
                from invokeai_provider.models.upscalers import spandrel as spandrel_model
                with self.registry.local_model(config) as local:
                    return spandrel_model.load(local.path, self.dtype)
            if config.type is ModelType.TextualInversion:
                from safetensors.torch import load_file

                with self.registry.local_model(config) as local:
                    return load_file(str(local.path))
        except InvokeAIProviderError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"model {config.name!r} ({config.key}) {part.value if part else ''}: could not be "
                                 f"loaded: {type(exc).__name__}: {exc}") from exc
        raise ModelLoadError(f"model {config.name!r}: loading {config.type.value} models is not supported yet")

    def _load_sd_controlnet(self, config: ModelConfig) -> Any:
        from diffusers import ControlNetModel

        with self.registry.local_model(config) as local:
            if config.format is ModelFormat.Diffusers:
                return ControlNetModel.from_pretrained(local.path, local_files_only=True, torch_dtype=self.dtype).eval()
            from invokeai_provider.models.stable_diffusion.controlnet_checkpoint import (
                ControlNetCheckpointError,
                load_controlnet_checkpoint,
            )

            try:  # the config from the weights, or from the --config folder given at install
                return load_controlnet_checkpoint(local.path, config.base.value, self.dtype, local.config_path)
            except ControlNetCheckpointError as error:
                raise ModelLoadError(f"ControlNet {config.name!r} ({config.key}): {error}") from None

    def _load_redux_part(self, config: ModelConfig) -> Any:
        """FLUX Redux's models: SigLIP (vision tower and image processor) or the Redux embedder. InvokeAI runs the
        embedder in bfloat16, never float16: here float16 is bfloat16 too, else the manager's dtype."""
        import torch

        from invokeai_provider.models.flux import redux

        with self.registry.local_model(config) as local:
            if config.type is ModelType.SigLIP:
                return redux.load_siglip(local.path, self.dtype)
            dtype = self.dtype_for(config)
            return redux.load_redux(local.path, torch.bfloat16 if dtype == torch.float16 else dtype)

    def _load_main_part(self, config: ModelConfig, part: Optional[SubModelType]) -> Any:
        if part is None:
            raise ModelLoadError(f"model {config.name!r} is a main model: name the submodel to load")
        with self._diffusers_files(config) as folder:
            return self._load_submodel(config, part, folder / part.value)

    def _load_submodel(self, config: ModelConfig, part: SubModelType, sub: Path) -> Any:
        if part is SubModelType.Scheduler:
            return json.loads((sub / "scheduler_config.json").read_text())
        if config.base in (BaseModelType.Flux, BaseModelType.StableDiffusion3):
            return self._load_indexed(config, part, sub)
        if config.base is BaseModelType.CogView4:  # the classes its model_index.json names: GLM, its tokenizer
            return self._load_indexed(config, part, sub)
        if part in (SubModelType.Tokenizer, SubModelType.Tokenizer2):
            from transformers import CLIPTokenizer

            return CLIPTokenizer.from_pretrained(sub, local_files_only=True)
        if part is SubModelType.TextEncoder:
            from transformers import CLIPTextModel

            return CLIPTextModel.from_pretrained(sub, local_files_only=True, torch_dtype=self.dtype).eval()
        if part is SubModelType.TextEncoder2:
            from transformers import CLIPTextModelWithProjection

            return CLIPTextModelWithProjection.from_pretrained(sub, local_files_only=True, torch_dtype=self.dtype).eval()
        if part is SubModelType.UNet:
            from diffusers import UNet2DConditionModel

            return UNet2DConditionModel.from_pretrained(sub, local_files_only=True, torch_dtype=self.dtype).eval()
        if part is SubModelType.VAE:
            from diffusers import AutoencoderKL

            return AutoencoderKL.from_pretrained(sub, local_files_only=True, torch_dtype=self.dtype).eval()
        raise ModelLoadError(f"model {config.name!r}: submodel {part.value!r} does not exist in SD main models")

    def _load_indexed(self, config: ModelConfig, part: SubModelType, sub: Path) -> Any:
        """A submodel of the class the folder's ``model_index.json`` names for it (one of `LOADABLE_CLASSES`)."""
        import importlib

        entry = json.loads((sub.parent / "model_index.json").read_text()).get(part.value)
        library, class_name = entry if isinstance(entry, list) and len(entry) == 2 else (None, None)
        if class_name is None and not (sub.is_dir() and any(sub.iterdir())):
            instead = OPTIONAL_PARTS.get((config.base, part), "")
            raise ModelLoadError(f"model {config.name!r} ships no {part.value} (its model_index.json has none)"
                                 + (f": {instead}" if instead else ""))
        if class_name not in LOADABLE_CLASSES.get(str(library), ()):
            raise ModelLoadError(f"model {config.name!r}: submodel {part.value!r} is {library}.{class_name} in its "
                                 "model_index.json, which this loader does not load")
        model_class = getattr(importlib.import_module(library), class_name)
        if "Tokenizer" in class_name:
            return model_class.from_pretrained(sub, local_files_only=True)
        return model_class.from_pretrained(sub, local_files_only=True, torch_dtype=self.dtype_for(config)).eval()

    def _load_vae(self, config: ModelConfig) -> Any:
        from diffusers import AutoencoderKL

        dtype = self.dtype_for(config)
        with self.registry.local_model(config) as local:
            if config.format is ModelFormat.Diffusers:
                return AutoencoderKL.from_pretrained(local.path, local_files_only=True, torch_dtype=dtype).eval()
            if local.config_path is None:
                raise ModelLoadError(f"VAE {config.name!r} is a single file without a config_path to build it from")
            return AutoencoderKL.from_single_file(str(local.path), config=str(local.config_path),
                                                  local_files_only=True, torch_dtype=dtype).eval()

    def diffusers_folder(self, config: ModelConfig) -> Path:
        """Where the model's diffusers layout is: its own folder, or its converted copy for a checkpoint.

        For a remote root the folder is in the host's disk cache and is not held once this returns; loaders
        use ``_diffusers_files``, which holds it while they read.
        """
        with self._diffusers_files(config) as folder:
            return folder

    @contextmanager
    def _diffusers_files(self, config: ModelConfig) -> Iterator[Path]:
        """The model's diffusers folder on this host, kept (not evicted) for the duration of the block."""
        if config.format is ModelFormat.Diffusers:
            with self.registry.local_model(config) as local:
                yield local.path
            return
        if config.base not in PIPELINE_CLASSES:
            raise ModelLoadError(f"model {config.name!r}: single-file {config.base.value} checkpoints are not "
                                 f"supported (supported bases: {', '.join(b.value for b in PIPELINE_CLASSES)})")
        if self.registry.is_remote:
            # its own cache entry, keyed by the model's hash; the cache's entry lock makes one process convert it
            key = f"converted-{self.registry.cache_key(config)}"
            with self.registry.disk_cache.use(key, lambda staging: self._convert(config, staging)) as folder:
                yield folder
            return
        target = self.registry.root / "converted" / config.key
        with self._convert_lock:
            if not (target / "model_index.json").is_file():
                staging = target.with_name(f".{config.key}.{os.getpid()}.partial")
                shutil.rmtree(staging, ignore_errors=True)
                try:
                    self._convert(config, staging)
                    staging.rename(target)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        yield target

    def _convert(self, config: ModelConfig, destination: Path) -> None:
        """Writes the diffusers folder of a single-file checkpoint at ``destination``."""
        import diffusers

        pipeline_class = getattr(diffusers, PIPELINE_CLASSES[config.base])
        with self.registry.local_model(config) as local:
            architecture = local.config_path or self._architecture_config(config)
            pipeline = pipeline_class.from_single_file(str(local.path), config=str(architecture),
                                                       local_files_only=True)
        pipeline.save_pretrained(destination, safe_serialization=True)

    def _architecture_config(self, config: ModelConfig) -> Path:
        """The bundled diffusers config folder for a checkpoint installed without ``--config``.

        The folder is shared by every checkpoint of the same architecture, so it is written once, into a temporary
        folder renamed into place: concurrent workers never read a half-written one. It goes beside the registry
        of a local root, and into the host's disk cache folder for a remote one.
        """
        from invokeai_provider.models.stable_diffusion import arch_configs
        variant = config.variant or ModelVariantType.Normal
        prediction = config.prediction_type or SchedulerPredictionType.Epsilon
        if not arch_configs.is_bundled(config.base, variant, prediction):
            raise ModelLoadError(
                f"model {config.name!r} is a single-file {config.base.value} checkpoint ({variant.value}, "
                f"{prediction.value}) with no bundled diffusers config for that architecture; install it with --config "
                "pointing at a diffusers folder of the same architecture")
        target = self.registry.work_dir / "configs" / f"{config.base.value}-{variant.value}-{prediction.value}"
        if (target / "model_index.json").is_file():
            return target
        staging = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.partial")
        try:
            arch_configs.write_pipeline_config(config.base, variant, prediction, staging)
            try:
                staging.rename(target)
            except OSError:  # another worker renamed its copy first
                if not (target / "model_index.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target
