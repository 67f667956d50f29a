"""`solora-node demo`: a local federation on this machine."""

from __future__ import annotations

import argparse

from solora_node.errors import NotBuiltYet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="a local federation on this machine (not available yet)"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    raise NotBuiltYet("solora-node demo", issue=6)
