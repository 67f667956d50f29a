"""Entry point `solora-node`: one module per subcommand under solora_node/commands/."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from solora_node import __version__
from solora_node.errors import SoloraError

# Shown in --help in this order. Only the module of the command being run is imported
# (each has register(subparsers)): `certs` or `status` must not pay for torch's import.
COMMANDS = {
    "run": "run the node daemon (foreground; SIGTERM = graceful stop)",
    "demo": "a local federation on this machine (separate processes on loopback)",
    "sim": "in-process multi-device experiment (the paper's comparison)",
    "study": "the comparison done in full: lr choice on validation, seeds, intervals",
    "bench": (
        "benchmarks: payload, codec, train, net, routing, soak, poisoning, idle, serve, scale, "
        "util, fleet"
    ),
    "infer": "generate with a checkpoint's implicit mixture of experts",
    "export": "export experts as stock PEFT LoRA folders (optionally merged models)",
    "serve": "an OpenAI-compatible HTTP API over a checkpoint's experts",
    "status": "query a running node",
    "topology": "planned clusters, degrees, spectral gaps",
    "certs": "federation CA and node certificates",
    "model": "prepare the embedded default base model",
}


def _chosen_command(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solora-node",
        description="Peer-to-peer multi-task LLM fine-tuning with sparse-and-orthogonal LoRA.",
    )
    parser.add_argument("--version", action="version", version=f"solora-node {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen_command(argv)
    for name, help_text in COMMANDS.items():
        if name == chosen:
            importlib.import_module(f"solora_node.commands.{name}").register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
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
