"""``invokeai-airflow models install|install-tiny|list``: the model registry of a model root."""

from __future__ import annotations

import argparse
import json
import sys

from invokeai_provider.errors import InvokeAIProviderError


def cmd_models_install(args: argparse.Namespace) -> int:
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    config = install_model(ModelRegistry(args.model_root), args.source, name=args.name, inplace=args.inplace,
                           allow_pickle=args.allow_pickle, allow_private_urls=args.allow_private_urls,
                           config_path=args.config)
    print(f"installed {config.name!r}: {config.base.value} {config.type.value} ({config.format.value}), "
          f"key {config.key}, {config.hash}")
    return 0


def cmd_models_install_tiny(args: argparse.Namespace) -> int:
    """A tiny random-weight model of an InvokeAI type and base, so a deployment can be smoke-tested offline."""
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_install import install_tiny

    try:
        done = install_tiny(ModelRegistry(args.model_root), args.kind, args.base, args.name,
                            log=lambda message: print(message, file=sys.stderr), format=args.format,
                            variant=args.variant)
    except ValueError as exc:  # a type, base or name the catalog refuses
        raise InvokeAIProviderError(str(exc)) from None
    c = done.config
    what = f"{c.base.value} {c.type.value} ({c.format.value}), key {c.key}, {c.hash}"
    print(f"installed {c.name!r}: {what}" if done.installed else f"{c.name!r} is already installed: {what}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    configs = sorted(ModelRegistry(args.model_root).all(), key=lambda c: (c.base.value, c.type.value, c.name))
    if args.json:
        json.dump([c.model_dump(mode="json") for c in configs], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for c in configs:
            print(f"{c.name:<32} {c.base.value:<13} {c.type.value:<10} {c.format.value:<11} {c.key}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``models install``, ``models install-tiny`` and ``models list``."""
    models = sub.add_parser("models", help="install and list models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    install = models_sub.add_parser("install", help="install a model from a path, an http(s) URL or a HF repo id")
    install.add_argument("source")
    install.add_argument("--name", help="name to register it under (default: the file or folder name)")
    install.add_argument("--inplace", action="store_true",
                         help="register a local path where it is instead of copying (local model roots only)")
    install.add_argument("--allow-pickle", action="store_true",
                         help="accept a pickled checkpoint (.ckpt/.pt/.bin); it is scanned before it is read")
    install.add_argument("--allow-private-urls", action="store_true", help="allow URLs that resolve to private hosts")
    install.add_argument("--config", metavar="DIR",
                         help="for a single-file checkpoint: a diffusers folder of the same architecture")
    install.add_argument("--model-root", metavar="URI",
                         help="model root, file:///path or s3://[CONN_ID@]bucket/prefix (default: [invokeai] model_root)")
    install.set_defaults(func=cmd_models_install)
    _register_install_tiny(models_sub)
    listing = models_sub.add_parser("list", help="list the registered models")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--model-root", metavar="URI", help="model root (default: [invokeai] model_root)")
    listing.set_defaults(func=cmd_models_list)


def _register_install_tiny(models_sub: argparse._SubParsersAction) -> None:
    from invokeai_provider.models.testing.tiny_catalog import FORMATS, TINY_MODELS, TINY_VARIANTS, kind_names

    bases = list(dict.fromkeys(base.value for _, base in TINY_MODELS))
    tiny = models_sub.add_parser(
        "install-tiny", help="build a tiny random-weight model of an InvokeAI model type and install it",
        description="Builds a tiny random-weight model (no model hub needed) and installs it like `models install`. "
                    "Default names: tiny-sd15, tiny-sd2, tiny-sdxl, tiny-flux for main models, tiny-<base>-<kind> "
                    "for the others (tiny-sd15-vae, tiny-sdxl-lora, tiny-flux-vae, ...; the FLUX T5 and CLIP "
                    "encoders, base any, are tiny-flux-t5_encoder and tiny-flux-clip_embed). Installing a name "
                    "again is a no-op.")
    tiny.add_argument("kind", metavar="KIND", help=f"InvokeAI model type: {', '.join(kind_names())} "
                                                   "(textual_inversion is embedding)")
    tiny.add_argument("--base", choices=bases, help="base model (default: the kind's only base, e.g. any for "
                                                    "t5_encoder and clip_embed, else sd-1)")
    tiny.add_argument("--name", help="name to register it under (default: tiny-<base>[-<kind>])")
    tiny.add_argument("--format", choices=FORMATS, default="default",
                      help="gguf: the model as a Q8_0 GGUF file, the unquantized tiny model's weights (main --base "
                           "flux, flux2 or z-image: tiny-flux-gguf, tiny-flux2-gguf, tiny-z-image-gguf; t5_encoder: "
                           "tiny-flux-t5-encoder-gguf, its tokenizer as its --config)")
    tiny.add_argument("--variant", choices=sorted({v for _, _, v in TINY_VARIANTS}),
                      help="a main of another variant: dev (with --base flux2: tiny-flux2-dev, a FLUX.2 [dev] "
                           "Flux2Pipeline folder with its Mistral encoder; the default FLUX.2 main is Klein 4B)")
    tiny.add_argument("--model-root", metavar="URI", help="model root (default: [invokeai] model_root)")
    tiny.set_defaults(func=cmd_models_install_tiny)
