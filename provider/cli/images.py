"""``invokeai-airflow images`` and ``boards``: a tenant's image library from the shell.

    invokeai-airflow images upload FILE... [--tenant T] [--board ID]   prints each image_name
    invokeai-airflow images list [--board ID|none] [--dag-id D] [--run-id R] [--starred] [--limit N] [--json]
    invokeai-airflow images show NAME        the record and the InvokeAI metadata in its PNG
    invokeai-airflow images star|unstar|delete NAME...
    invokeai-airflow boards create NAME | list | rename ID NAME | add ID IMAGE... | remove IMAGE...
    invokeai-airflow boards delete ID [--include-images]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _library(args: argparse.Namespace) -> Any:
    from invokeai_provider.config import settings
    from invokeai_provider.execution.tenants import check_tenant
    from invokeai_provider.storage.base import backend_for_uri, default_artifact_root
    from invokeai_provider.storage.library.images import ImageLibrary

    tenant = check_tenant(args.tenant or settings().default_tenant, field="--tenant")
    return ImageLibrary(backend_for_uri(args.artifacts or default_artifact_root()), tenant)


def _boards(args: argparse.Namespace) -> Any:
    from invokeai_provider.storage.library.boards import Boards

    return Boards(_library(args))


def _print(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def cmd_upload(args: argparse.Namespace) -> int:
    library = _library(args)
    if args.board:
        _boards(args).get(args.board)  # a board that does not exist fails before anything is stored
    for path in args.files:
        record = library.upload(Path(path).read_bytes(), board_id=args.board, category=args.category)
        print(record["image_name"] if not args.json else json.dumps(record, default=str))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from invokeai_provider.storage.library.index import ImageIndex, ImageQuery

    query = ImageQuery(board_id=args.board, dag_id=args.dag_id, run_id=args.run_id,
                       starred=True if args.starred else None, include_intermediate=args.intermediate,
                       since=args.since)
    page = ImageIndex(_library(args)).query(query, offset=args.offset, limit=args.limit)
    if args.json:
        _print({"total": page.total, "offset": page.offset, "limit": page.limit, "images": page.records})
        return 0
    for record in page.records:
        made_by = f"{record['dag_id']}/{record['run_id']}" if record.get("dag_id") else "upload"
        print(f"{record['image_name']}  {record['width']}x{record['height']}  {record['created_at'][:19]}  "
              f"{'*' if record.get('starred') else ' '}  board={record.get('board_id') or 'none'}  {made_by}")
    print(f"{len(page.records)} of {page.total} images", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from invokeai_provider.storage.library.images import read_chunks

    library = _library(args)
    record = library.get(args.name)
    _print({"record": record, **read_chunks(library.read_image(args.name, record))})
    return 0


def cmd_star(args: argparse.Namespace) -> int:
    library = _library(args)
    for name in args.names:
        library.update(name, starred=args.starred)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    library = _library(args)
    for name in args.names:
        library.delete(name)
        print(f"deleted {name}", file=sys.stderr)
    return 0


def cmd_boards(args: argparse.Namespace) -> int:
    boards = _boards(args)
    action = args.action
    if action == "create":
        _print(boards.create(args.name))
    elif action == "list":
        _print(boards.all())
    elif action == "rename":
        _print(boards.rename(args.board_id, args.name))
    elif action == "add":
        for name in args.images:
            boards.add_image(args.board_id, name)
    elif action == "remove":
        for name in args.images:
            boards.remove_image(name)
    elif action == "delete":
        names = boards.delete(args.board_id, include_images=args.include_images)
        print(f"deleted board {args.board_id}; {len(names)} images "
              f"{'deleted' if args.include_images else 'kept (now on no board)'}", file=sys.stderr)
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", help="whose library (default: [invokeai] default_tenant)")
    parser.add_argument("--artifacts", metavar="URI", help="artifact root (default: [invokeai] artifact_root)")


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``images`` and ``boards``."""
    images = sub.add_parser("images", help="a tenant's image library: upload, list, show, star, delete")
    actions = images.add_subparsers(dest="action", required=True)
    upload = actions.add_parser("upload", help="add image files to the library; prints their image names")
    upload.add_argument("files", nargs="+", metavar="FILE")
    upload.add_argument("--board", metavar="BOARD_ID", help="put them on this board")
    upload.add_argument("--category", default="user", choices=("general", "mask", "control", "user", "other"),
                        help="InvokeAI's image category (default user)")
    upload.add_argument("--json", action="store_true", help="print each image's record")
    upload.set_defaults(func=cmd_upload)
    listing = actions.add_parser("list", help="the newest images first, filtered")
    listing.add_argument("--board", metavar="BOARD_ID", help="only this board's images ('none': on no board)")
    listing.add_argument("--dag-id", help="only this DAG's images")
    listing.add_argument("--run-id", help="only this run's images")
    listing.add_argument("--starred", action="store_true", help="only starred images")
    listing.add_argument("--intermediate", action="store_true", help="include intermediate images")
    listing.add_argument("--since", metavar="ISO", help="only images made at or after this date or time")
    listing.add_argument("--offset", type=int, default=0)
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object: total, offset, limit, images")
    listing.set_defaults(func=cmd_list)
    show = actions.add_parser("show", help="an image's record and the InvokeAI metadata, graph and workflow in it")
    show.add_argument("name", metavar="IMAGE_NAME")
    show.set_defaults(func=cmd_show)
    for name, starred in (("star", True), ("unstar", False)):
        star = actions.add_parser(name, help=f"{name} images")
        star.add_argument("names", nargs="+", metavar="IMAGE_NAME")
        star.set_defaults(func=cmd_star, starred=starred)
    delete = actions.add_parser("delete", help="delete images (PNG, thumbnail and record)")
    delete.add_argument("names", nargs="+", metavar="IMAGE_NAME")
    delete.set_defaults(func=cmd_delete)
    for parser in actions.choices.values():
        _common(parser)

    boards = sub.add_parser("boards", help="a tenant's boards: create, list, rename, add/remove images, delete")
    board_actions = boards.add_subparsers(dest="action", required=True)
    board_actions.add_parser("create", help="a new board; prints it").add_argument("name")
    board_actions.add_parser("list", help="every board")
    rename = board_actions.add_parser("rename", help="rename a board")
    rename.add_argument("board_id")
    rename.add_argument("name")
    add = board_actions.add_parser("add", help="put images on a board")
    add.add_argument("board_id")
    add.add_argument("images", nargs="+", metavar="IMAGE_NAME")
    board_actions.add_parser("remove", help="take images off their board").add_argument(
        "images", nargs="+", metavar="IMAGE_NAME")
    drop = board_actions.add_parser("delete", help="delete a board; its images are kept unless --include-images")
    drop.add_argument("board_id")
    drop.add_argument("--include-images", action="store_true", help="delete the board's images too")
    for parser in board_actions.choices.values():
        _common(parser)
        parser.set_defaults(func=cmd_boards)
