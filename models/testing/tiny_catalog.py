"""Which tiny random-weight model stands for each InvokeAI model type and base: the one table to extend.

``models install-tiny`` and the demo build from here, so a smoke test of any deployment needs no model hub. An
entry says how to build the model (a builder of ``tiny``), what it is called by default and where its files go
under the build folder. A new family (FLUX, SD3, ...) adds its bases and builders to ``TINY_MODELS``; everything
else (the command, its choices, its tests) reads the table.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from invokeai_provider.core.taxonomy import BaseModelType, ModelType

__all__ = ["FORMATS", "TINY_GGUF", "TINY_MODELS", "TinyModel", "base_slug", "check_name", "default_name", "kind_names",
           "resolve_kind", "seed_for", "tiny_model"]

Builder = Callable[[str, Path, int], Path]


def _main(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny import build_sd_model

    return build_sd_model(base, dest, seed=seed)  # type: ignore[arg-type]


def _flux_main(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_flux import build_flux_model

    return build_flux_model(dest, variant="dev", seed=seed)


def _cogview4_main(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_cogview4 import build_cogview4_model

    return build_cogview4_model(dest, seed=seed)


def _flux_t5(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_flux_parts import build_t5_encoder

    return build_t5_encoder(dest, seed=seed)


def _flux_clip(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_flux_parts import build_clip_embed

    return build_clip_embed(dest, seed=seed)


def _flux_vae(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_flux_parts import build_flux_vae

    return build_flux_vae(dest, seed=seed)  # BFL's single file (ae.safetensors) for a .safetensors destination


def _sd3_main(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_sd3 import build_sd3_model

    return build_sd3_model(dest, seed=seed)


def _sd3_vae(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_sd3 import build_sd3_vae

    return build_sd3_vae(dest, seed=seed)


def _sd3_clip_g(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_sd3 import build_sd3_clip_embed

    return build_sd3_clip_embed(dest, "g", seed=seed)


def _sd3_t5(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_sd3 import build_sd3_t5_encoder

    return build_sd3_t5_encoder(dest, seed=seed)


def _vae(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny import build_vae

    return build_vae(base, dest, seed=seed)  # type: ignore[arg-type]


def _lora(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny import build_lora

    return build_lora(base, dest, style="kohya", seed=seed)  # type: ignore[arg-type]


def _flux_lora(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_flux import build_flux_lora

    return build_flux_lora(dest, style="kohya", seed=seed)


def _sd_controlnet(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_sd_controlnet import build_sd_controlnet

    return build_sd_controlnet(base, dest, seed=seed)


def _sd_t2i_adapter(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_sd_controlnet import build_sd_t2i_adapter

    return build_sd_t2i_adapter(base, dest, seed=seed)


def _flux_controlnet(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_flux_control import build_flux_controlnet

    return build_flux_controlnet(dest, seed=seed)


def _flux_control_lora(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_flux_control_lora import build_flux_control_lora

    return build_flux_control_lora(dest, seed=seed)


def _siglip(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_flux_redux import build_siglip

    return build_siglip(dest, seed=seed)


def _flux_redux(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_flux_redux import build_flux_redux

    return build_flux_redux(dest, seed=seed)


def _clip_vision(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_flux_ip_adapter import build_clip_vision

    return build_clip_vision(dest, seed=seed)


def _flux_ip_adapter(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_flux_ip_adapter import build_flux_ip_adapter

    return build_flux_ip_adapter(dest, seed=seed)


def _sd_ip_adapter(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny_sd_ip_adapter import build_sd_ip_adapter

    return build_sd_ip_adapter(base, dest, seed=seed)  # InvokeAI's folder, naming its encoder


def _sd_clip_vision(encoder: str) -> Builder:
    def build(base: str, dest: Path, seed: int) -> Path:
        from invokeai_provider.models.testing.tiny_sd_ip_adapter import build_sd_clip_vision

        return build_sd_clip_vision(encoder, dest, seed=seed)

    return build


def _z_image(builder: str) -> Builder:
    """A builder of `tiny_z_image` (main, qwen3_encoder, lora, controlnet) or the FLUX VAE it uses (vae)."""
    def build(base: str, dest: Path, seed: int) -> Path:
        from invokeai_provider.models.testing import tiny_flux_parts, tiny_z_image

        if builder == "vae":
            return tiny_flux_parts.build_flux_vae(dest, seed=seed)
        return getattr(tiny_z_image, f"build_{builder}")(dest, seed=seed)

    return build


def _flux2(builder: str) -> Builder:
    """A builder of `tiny_flux2` (the Klein main, its VAE as BFL's single file) or its Qwen3 encoder as a standalone
    ``qwen3_encoder`` folder (the main's own weights for the same seed)."""
    def build(base: str, dest: Path, seed: int) -> Path:
        from invokeai_provider.models.testing import tiny_flux2, tiny_qwen3

        if builder == "qwen3_encoder":
            return tiny_qwen3.build_qwen3_encoder(dest, seed=seed, tag="flux2/qwen3")
        if builder == "mistral_encoder":  # FLUX.2 [dev]'s, the same weights as the [dev] main's for the same seed
            from invokeai_provider.models.testing.tiny_mistral import build_mistral_encoder

            return build_mistral_encoder(dest, seed=seed, tag="flux2-dev/mistral")
        return getattr(tiny_flux2, f"build_{builder}")(dest, seed=seed)

    return build


def _gguf(builder: str) -> Builder:
    """A builder of `tiny_gguf` (Q8_0): the unquantized tiny model's weights as a GGUF file."""
    def build(base: str, dest: Path, seed: int) -> Path:
        from invokeai_provider.models.testing import tiny_gguf

        return getattr(tiny_gguf, f"build_{builder}")(dest, seed=seed)

    return build


def _t5_tokenizer(dest: Path) -> Path:
    """The tiny T5 tokenizer folder a tiny GGUF T5 encoder is installed with (its ``--config``)."""
    from invokeai_provider.models.testing.tiny_gguf import build_t5_tokenizer

    return build_t5_tokenizer(dest)


def _embedding(base: str, dest: Path, seed: int) -> Path:
    from invokeai_provider.models.testing.tiny import build_embedding

    return build_embedding(base, dest, tokens=2, seed=seed)  # type: ignore[arg-type]


# InvokeAI's base strings -> the short form in default names (the demo and example workflows use tiny-sd15/tiny-sdxl)
_SLUGS = {BaseModelType.StableDiffusion1: "sd15", BaseModelType.StableDiffusion2: "sd2",
          BaseModelType.StableDiffusionXL: "sdxl", BaseModelType.StableDiffusionXLRefiner: "sdxl-refiner",
          BaseModelType.Flux: "flux", BaseModelType.StableDiffusion3: "sd3"}
# Other spellings of a type that people (and InvokeAI's enum member names) use for it
_KIND_ALIASES = {"textual_inversion": ModelType.TextualInversion, "ti": ModelType.TextualInversion}


@dataclass(frozen=True)
class TinyModel:
    """One buildable tiny model: its InvokeAI type and base, its builder and the shape of what it writes."""

    type: ModelType
    base: BaseModelType
    build: Builder
    suffix: str = ""  # ".safetensors" for a single file, "" for a diffusers folder
    # InvokeAI reads a VAE's base from its folder name ("xl", "sd2"): the folder then carries the base, not the name
    named_by_base: bool = False
    slug: str = ""  # the family in its default name when the base does not say it (T5 and CLIP are base "any")
    # Under its default name the model takes this model's seed: FLUX's parts are then the tiny FLUX main's own
    # weights, so a graph using them gives the main's image
    weights_of: str = ""
    # the default name when it is not tiny-<slug>-<type>: an encoder IP-Adapters find by InvokeAI's name for it
    name: str = ""
    # builds the folder the model is installed with as its --config (a GGUF T5 encoder's tokenizer), or None
    config: Optional[Callable[[Path], Path]] = None

    def seed(self, name: str) -> int:
        """The seed of the model installed as ``name`` (see `seed_for`)."""
        return seed_for(self.weights_of if self.weights_of and name == default_name(self) else name)

    def relative_path(self, name: str) -> Path:
        """Where the model's files go under a build folder, as a relative path."""
        if self.named_by_base:
            return Path(name) / f"{base_slug(self.base)}-{self.type.value}"
        return Path(f"{name}{self.suffix}")


def _entries() -> dict[tuple[ModelType, BaseModelType], TinyModel]:
    sd = (BaseModelType.StableDiffusion1, BaseModelType.StableDiffusion2, BaseModelType.StableDiffusionXL)
    table: dict[tuple[ModelType, BaseModelType], TinyModel] = {}
    for base in (*sd, BaseModelType.StableDiffusionXLRefiner):
        table[ModelType.Main, base] = TinyModel(ModelType.Main, base, _main)
    for base in sd:
        table[ModelType.VAE, base] = TinyModel(ModelType.VAE, base, _vae, named_by_base=True)
        table[ModelType.LoRA, base] = TinyModel(ModelType.LoRA, base, _lora, ".safetensors")
        table[ModelType.TextualInversion, base] = TinyModel(ModelType.TextualInversion, base, _embedding,
                                                            ".safetensors")
        table[ModelType.ControlNet, base] = TinyModel(ModelType.ControlNet, base, _sd_controlnet)
    for base in (BaseModelType.StableDiffusion1, BaseModelType.StableDiffusionXL):  # InvokeAI's T2I-Adapter bases
        table[ModelType.T2IAdapter, base] = TinyModel(ModelType.T2IAdapter, base, _sd_t2i_adapter)
    table[ModelType.Main, BaseModelType.Flux] = TinyModel(ModelType.Main, BaseModelType.Flux, _flux_main)
    # CogView4: a diffusers folder with its GLM encoder, tokenizer and VAE (InvokeAI has no separate CogView4 parts)
    table[ModelType.Main, BaseModelType.CogView4] = TinyModel(ModelType.Main, BaseModelType.CogView4, _cogview4_main)
    flux_main = "tiny-flux"  # default_name of the FLUX main
    table[ModelType.VAE, BaseModelType.Flux] = TinyModel(ModelType.VAE, BaseModelType.Flux, _flux_vae, ".safetensors",
                                                         weights_of=flux_main)
    table[ModelType.LoRA, BaseModelType.Flux] = TinyModel(ModelType.LoRA, BaseModelType.Flux, _flux_lora,
                                                          ".safetensors")
    table[ModelType.ControlNet, BaseModelType.Flux] = TinyModel(ModelType.ControlNet, BaseModelType.Flux,
                                                                _flux_controlnet)
    # BFL's format, for the tiny transformer: a Canny/Depth-style LoRA whose img_in takes 128 channels
    table[ModelType.ControlLoRa, BaseModelType.Flux] = TinyModel(ModelType.ControlLoRa, BaseModelType.Flux,
                                                                 _flux_control_lora, ".safetensors")
    # FLUX Redux: its image embedder (base flux) and the SigLIP vision model it reads (base any, like InvokeAI's)
    table[ModelType.FluxRedux, BaseModelType.Flux] = TinyModel(ModelType.FluxRedux, BaseModelType.Flux, _flux_redux,
                                                               ".safetensors")
    table[ModelType.SigLIP, BaseModelType.Any] = TinyModel(ModelType.SigLIP, BaseModelType.Any, _siglip, slug="flux")
    # FLUX IP-Adapter: XLabs' file (base flux) and the CLIP vision (ViT-L-shaped) encoder it reads (base any)
    table[ModelType.IPAdapter, BaseModelType.Flux] = TinyModel(ModelType.IPAdapter, BaseModelType.Flux,
                                                               _flux_ip_adapter, ".safetensors")
    table[ModelType.CLIPVision, BaseModelType.Any] = TinyModel(ModelType.CLIPVision, BaseModelType.Any,
                                                               _clip_vision, slug="flux")
    # SD IP-Adapters (InvokeAI's folder) and the encoders InvokeAI pairs with them: clip_vision models are base any,
    # so --base picks the encoder (ViT-H for sd-1, ViT-G for sdxl), installed under the name the adapter asks for
    for base, encoder, repo_name in ((BaseModelType.StableDiffusion1, "ViT-H", "ip_adapter_sd_image_encoder"),
                                     (BaseModelType.StableDiffusionXL, "ViT-G", "ip_adapter_sdxl_image_encoder")):
        table[ModelType.IPAdapter, base] = TinyModel(ModelType.IPAdapter, base, _sd_ip_adapter)
        table[ModelType.CLIPVision, base] = TinyModel(ModelType.CLIPVision, BaseModelType.Any,
                                                      _sd_clip_vision(encoder), name=repo_name)
    # InvokeAI's base for standalone T5 and CLIP embed encoders is "any": one encoder serves several families
    table[ModelType.T5Encoder, BaseModelType.Any] = TinyModel(ModelType.T5Encoder, BaseModelType.Any, _flux_t5,
                                                              slug="flux", weights_of=flux_main)
    table[ModelType.CLIPEmbed, BaseModelType.Any] = TinyModel(ModelType.CLIPEmbed, BaseModelType.Any, _flux_clip,
                                                              slug="flux", weights_of=flux_main)
    # SD3.5: the main (a StableDiffusion3Pipeline folder), its VAE (base sd-3) and, base any as InvokeAI's encoders
    # are, its CLIP-G embed (with projection; --base sd-3 picks it) and T5 encoder: the main's own weights
    sd3, sd3_main = BaseModelType.StableDiffusion3, "tiny-sd3"
    table[ModelType.Main, sd3] = TinyModel(ModelType.Main, sd3, _sd3_main)
    table[ModelType.VAE, sd3] = TinyModel(ModelType.VAE, sd3, _sd3_vae, weights_of=sd3_main)
    table[ModelType.CLIPEmbed, sd3] = TinyModel(ModelType.CLIPEmbed, BaseModelType.Any, _sd3_clip_g,
                                                weights_of=sd3_main, name="tiny-sd3-clip-g")
    table[ModelType.T5Encoder, sd3] = TinyModel(ModelType.T5Encoder, BaseModelType.Any, _sd3_t5, slug="sd3",
                                                weights_of=sd3_main)
    # Z-Image: the main (a ZImagePipeline folder), a LoRA and a ControlNet (base z-image), and the parts InvokeAI
    # installs separately with the main's own weights: its Qwen3 encoder (base any; --base z-image picks it) and its
    # VAE, a FLUX VAE (base flux, what z_image_model_loader's vae_model takes; --base z-image picks it)
    z_image, z_image_main = BaseModelType.ZImage, "tiny-z-image"
    table[ModelType.Main, z_image] = TinyModel(ModelType.Main, z_image, _z_image("z_image_model"))
    table[ModelType.LoRA, z_image] = TinyModel(ModelType.LoRA, z_image, _z_image("z_image_lora"), ".safetensors")
    table[ModelType.ControlNet, z_image] = TinyModel(ModelType.ControlNet, z_image, _z_image("z_image_controlnet"),
                                                     ".safetensors")
    table[ModelType.Qwen3Encoder, z_image] = TinyModel(ModelType.Qwen3Encoder, BaseModelType.Any,
                                                       _z_image("qwen3_encoder"), slug="z-image",
                                                       weights_of=z_image_main)
    table[ModelType.VAE, z_image] = TinyModel(ModelType.VAE, BaseModelType.Flux, _z_image("vae"),
                                              weights_of=z_image_main, name="tiny-z-image-vae")
    # FLUX.2 Klein: the main (a Flux2KleinPipeline folder, Klein 4B) and the parts a single-file Klein transformer
    # needs, with the main's own weights: its VAE (BFL's single file, base flux2) and its Qwen3 encoder (base any;
    # --base flux2 picks this 27-layer one)
    flux2, flux2_main = BaseModelType.Flux2, "tiny-flux2"
    table[ModelType.Main, flux2] = TinyModel(ModelType.Main, flux2, _flux2("flux2_model"))
    table[ModelType.VAE, flux2] = TinyModel(ModelType.VAE, flux2, _flux2("flux2_vae"), ".safetensors",
                                            weights_of=flux2_main)
    table[ModelType.LoRA, flux2] = TinyModel(ModelType.LoRA, flux2, _flux2("flux2_lora"), ".safetensors")
    table[ModelType.Qwen3Encoder, flux2] = TinyModel(ModelType.Qwen3Encoder, BaseModelType.Any,
                                                     _flux2("qwen3_encoder"), slug="flux2", weights_of=flux2_main)
    # FLUX.2 [dev]'s Mistral Small 3.1 encoder (base any, as InvokeAI's), with the tiny [dev] main's weights
    table[ModelType.MistralEncoder, BaseModelType.Any] = TinyModel(
        ModelType.MistralEncoder, BaseModelType.Any, _flux2("mistral_encoder"), slug="flux2-dev",
        weights_of=DEV_MAIN)
    return table


DEV_MAIN = "tiny-flux2-dev"  # the tiny FLUX.2 [dev] main's default name


TINY_MODELS: dict[tuple[ModelType, BaseModelType], TinyModel] = _entries()
# --format gguf: the mains InvokeAI runs as GGUF files, Q8_0-quantized from the unquantized tiny main's weights (same
# seed under the default name), so a GGUF main and the unquantized one give nearly the same image. A single-file main
# is the transformer alone: its encoder and VAE are the family's own tiny parts.
TINY_GGUF: dict[tuple[ModelType, BaseModelType], TinyModel] = {
    (ModelType.Main, BaseModelType.ZImage): TinyModel(ModelType.Main, BaseModelType.ZImage, _gguf("z_image_gguf"),
                                                      ".gguf", weights_of="tiny-z-image", name="tiny-z-image-gguf"),
    (ModelType.Main, BaseModelType.Flux2): TinyModel(ModelType.Main, BaseModelType.Flux2, _gguf("flux2_gguf"),
                                                     ".gguf", weights_of="tiny-flux2", name="tiny-flux2-gguf"),
    (ModelType.Main, BaseModelType.Flux): TinyModel(ModelType.Main, BaseModelType.Flux, _gguf("flux_gguf"),
                                                    ".gguf", weights_of="tiny-flux", name="tiny-flux-gguf"),
    # FLUX.1's (and SD3's) T5 encoder, the tiny FLUX main's weights; its tokenizer is installed as its --config
    (ModelType.T5Encoder, BaseModelType.Any): TinyModel(ModelType.T5Encoder, BaseModelType.Any, _gguf("t5_gguf"),
                                                        ".gguf", weights_of="tiny-flux",
                                                        name="tiny-flux-t5-encoder-gguf", config=_t5_tokenizer),
}
FORMATS = ("default", "gguf")
# --variant: a main of another variant than its base's usual tiny one (FLUX.2's is Klein 4B)
TINY_VARIANTS: dict[tuple[ModelType, BaseModelType, str], TinyModel] = {
    (ModelType.Main, BaseModelType.Flux2, "dev"): TinyModel(ModelType.Main, BaseModelType.Flux2,
                                                           _flux2("flux2_dev_model"), name=DEV_MAIN),
}


def kind_names() -> list[str]:
    """The model types that have a tiny model, by InvokeAI's type string."""
    return list(dict.fromkeys(kind.value for kind, _ in TINY_MODELS))


def resolve_kind(kind: str) -> ModelType:
    """A type string (``main``, ``vae``, ``lora``, ``embedding``) or an alias (``textual_inversion``)."""
    text = kind.strip().lower()
    if text in _KIND_ALIASES:
        return _KIND_ALIASES[text]
    try:
        found = ModelType(text)
    except ValueError:
        found = None
    if found is None or not any(k == found for k, _ in TINY_MODELS):
        raise ValueError(f"no tiny model of type {kind!r}; expected one of: {', '.join(kind_names())} "
                         f"(or {', '.join(sorted(_KIND_ALIASES))})")
    return found


def tiny_model(kind: str | ModelType, base: str | BaseModelType | None = None, format: str = "default",
               variant: str | None = None) -> TinyModel:
    """The table entry for a type and base (no base: the type's only one, else sd-1) in ``format`` (``default``: the
    model's usual form; ``gguf``: a GGUF-quantized file), or of ``variant`` (``main --base flux2 --variant dev``);
    the error lists the bases that type has."""
    model_type = kind if isinstance(kind, ModelType) else resolve_kind(kind)
    if variant is not None:
        found = TINY_VARIANTS.get((model_type, BaseModelType(base), variant)) if base else None
        if found is None or format != "default":
            raise ValueError(f"no tiny {model_type.value} model of variant {variant!r}"
                             f"{' in format ' + format if format != 'default' else ''} for base {base}; there are: "
                             f"{', '.join(f'{k.value} --base {b.value} --variant {v}' for k, b, v in TINY_VARIANTS)}")
        return found
    if format not in FORMATS:
        raise ValueError(f"tiny model format {format!r}: expected one of {', '.join(FORMATS)}")
    table = TINY_GGUF if format == "gguf" else TINY_MODELS
    bases = [b.value for k, b in table if k == model_type]
    if not bases:
        raise ValueError(f"no tiny {model_type.value} model in format {format}; the gguf format has: "
                         f"{', '.join(f'{k.value} --base {b.value}' for k, b in TINY_GGUF)}")
    if base is None:  # the type's only base, else the family-neutral one, else sd-1, else the first listed
        base = bases[0] if len(bases) == 1 else (BaseModelType.Any if BaseModelType.Any.value in bases
                                                 else BaseModelType.StableDiffusion1
                                                 if BaseModelType.StableDiffusion1.value in bases else bases[0])
    try:
        return table[model_type, BaseModelType(base)]
    except (KeyError, ValueError):
        raise ValueError(f"no tiny {model_type.value} model for base {str(getattr(base, 'value', base))!r}; "
                         f"expected one of: {', '.join(bases)}") from None


def base_slug(base: BaseModelType) -> str:
    return _SLUGS.get(base, base.value)


def default_name(entry: TinyModel) -> str:
    """``tiny-sd15`` for the SD1 main model, ``tiny-sdxl-lora`` for the SDXL LoRA, and so on."""
    if entry.name:
        return entry.name
    slug = entry.slug or base_slug(entry.base)
    return f"tiny-{slug}" if entry.type == ModelType.Main else f"tiny-{slug}-{entry.type.value}"


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name: str) -> str:
    """A model name that is also a safe file name (it names the build folder)."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"model name {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter "
                         "or digit")
    return name


def seed_for(name: str) -> int:
    """Weights seeded by the name: two tiny models of one kind under different names are different models (the
    registry refuses a second copy of identical files), and the same name always gives the same bytes."""
    return zlib.crc32(name.encode())
