"""`solora-node run --config FILE`: the node daemon (foreground; SIGTERM = graceful stop)."""

from __future__ import annotations

import argparse

from solora_node.commands._common import add_config_args, config_from_args
from solora_node.errors import NotBuiltYet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the node daemon (not available yet)")
    add_config_args(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config_from_args(args)  # a bad config is reported before anything else
    raise NotBuiltYet("solora-node run", issue=5)
