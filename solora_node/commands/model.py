"""`solora-node model prepare`: make the embedded default model ready (no network)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from solora_node.commands._common import emit_json

# Kept in sync with solora_node.model; not imported here so that `--help` stays fast
# (that module imports torch and transformers).
DEFAULT_MODEL_NAME = "smollm2-135m"
DEFAULT_CACHE = Path(os.path.expanduser("~/.cache/solora-node"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="prepare the embedded default base model")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    prepare = actions.add_parser("prepare", help="convert the embedded GGUF to safetensors once")
    prepare.add_argument("--name", default=DEFAULT_MODEL_NAME)
    prepare.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    prepare.add_argument("--json", action="store_true")
    prepare.set_defaults(handler=handle_prepare)


def handle_prepare(args: argparse.Namespace) -> int:
    from solora_node.model import prepare_default_model

    folder = prepare_default_model(args.cache_dir, args.name)
    if args.json:
        emit_json({"name": args.name, "path": str(folder)})
    else:
        print(folder)
    return 0
