"""`solora-node run --config FILE`: the node daemon (foreground; SIGTERM = graceful stop)."""

from __future__ import annotations

import argparse
import asyncio

from solora_node.commands._common import add_config_args, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run the node daemon (foreground; SIGTERM = graceful stop)"
    )
    add_config_args(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from solora_node import logs
    from solora_node.native_stderr import capture_native_stderr
    from solora_node.node import run_node

    cfg = config_from_args(args)  # a bad config is reported before anything is loaded
    level = "debug" if args.debug else cfg.node.log_level
    # gRPC core and torch write to fd 2 directly: route those lines through logging too.
    stream = capture_native_stderr(wrap_plain=cfg.node.log_json)
    logs.configure(level, cfg.node.log_json, cfg.node.id, stream=stream)
    return asyncio.run(run_node(cfg))
