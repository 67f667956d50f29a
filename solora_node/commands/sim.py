"""`solora-node sim`: in-process multi-device experiment."""

from __future__ import annotations

import argparse

from solora_node.errors import NotBuiltYet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sim", help="in-process multi-device experiment (not available yet)"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    raise NotBuiltYet("solora-node sim", issue=7)
