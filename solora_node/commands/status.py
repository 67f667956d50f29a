"""`solora-node status`: query a running node."""

from __future__ import annotations

import argparse

from solora_node.errors import NotBuiltYet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status", help="query a running node (not available yet)"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    raise NotBuiltYet("solora-node status", issue=5)
