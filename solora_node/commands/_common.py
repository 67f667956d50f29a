"""Helpers shared by subcommands: JSON output and config loading from flags."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from solora_node.config import ModelSection, NodeConfig, load_config


def emit_json(obj: Any) -> None:
    """Every --json output is exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", type=Path, required=required, help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a config field (repeatable; beats file and SOLORA_ env vars)",
    )


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    return load_config(args.config, args.overrides)


def add_checkpoint_args(parser: argparse.ArgumentParser) -> None:
    """--checkpoint, --cache-dir and --threads of the commands that load a checkpoint."""
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="an adapter checkpoint folder (manifest.json, blocks/masks/codes .safetensors) "
        "or a node's data_dir (its adapter/ folder is used)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=ModelSection().cache_dir,
        help="where the prepared default base model is kept",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
