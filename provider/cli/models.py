"""``invokeai-airflow models install|list``: the model registry of a model root."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_models_install(args: argparse.Namespace) -> int:
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    config = install_model(ModelRegistry(args.model_root), args.source, name=args.name, inplace=args.inplace,
                           allow_pickle=args.allow_pickle, allow_private_urls=args.allow_private_urls,
                           config_path=args.config)
    print(f"installed {config.name!r}: {config.base.value} {config.type.value} ({config.format.value}), "
          f"key {config.key}, {config.hash}")
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
    """Adds ``models install`` and ``models list``."""
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
    listing = models_sub.add_parser("list", help="list the registered models")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--model-root", metavar="URI", help="model root (default: [invokeai] model_root)")
    listing.set_defaults(func=cmd_models_list)
