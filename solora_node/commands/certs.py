"""`solora-node certs`: federation CA and node certificates."""

from __future__ import annotations

import argparse

from solora_node.errors import NotBuiltYet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("certs", help="federation CA and node certificates (not available yet)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    raise NotBuiltYet("solora-node certs", issue=4)
