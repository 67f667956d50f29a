"""`solora-node topology`: planned clusters, degrees, spectral gaps."""

from __future__ import annotations

import argparse

from solora_node.errors import NotBuiltYet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("topology", help="planned clusters, degrees, spectral gaps (not available yet)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    raise NotBuiltYet("solora-node topology", issue=5)
