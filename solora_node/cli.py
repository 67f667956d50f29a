"""Entry point `solora-node`: one module per subcommand under solora_node/commands/."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from solora_node import __version__
from solora_node.errors import SoloraError

# Order is the order shown in --help; each module has register(subparsers).
COMMANDS = ("run", "demo", "sim", "bench", "infer", "status", "topology", "certs", "model")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solora-node",
        description="Peer-to-peer multi-task LLM fine-tuning with sparse-and-orthogonal LoRA.",
    )
    parser.add_argument("--version", action="version", version=f"solora-node {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"solora_node.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args) or 0)
    except SoloraError as err:
        if args.debug:
            raise
        print(f"solora-node {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"solora-node {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
