"""`solora-node run`: run the node daemon (foreground; SIGTERM = graceful stop)."""

from __future__ import annotations

import argparse

from solora_node.errors import NotBuiltYet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the node daemon (foreground; SIGTERM = graceful stop) (not available yet)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    raise NotBuiltYet("solora-node run", issue=5)
