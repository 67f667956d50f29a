"""`solora-node infer`: generate with a checkpoint's implicit mixture of experts."""

from __future__ import annotations

import argparse

from solora_node.errors import NotBuiltYet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("infer", help="generate with a checkpoint's implicit mixture of experts (not available yet)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    raise NotBuiltYet("solora-node infer", issue=3)
