"""`solora-node run --config FILE`: the node daemon (foreground; SIGTERM = graceful stop)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from solora_node.commands._common import add_config_args, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run the node daemon (foreground; SIGTERM = graceful stop)"
    )
    add_config_args(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from solora_node import logs
    from solora_node.native_stderr import capture_native_stderr, restore_native_stderr
    from solora_node.node import run_node

    cfg = config_from_args(args)  # a bad config is reported before anything is loaded
    level = "debug" if args.debug else cfg.node.log_level
    # gRPC core and torch write to fd 2 directly: route those lines through logging too.
    stream = capture_native_stderr(wrap_plain=cfg.node.log_json)
    logs.configure(level, cfg.node.log_json, cfg.node.id, stream=stream)
    code = asyncio.run(run_node(cfg))
    # Everything is saved and closed. Python's own teardown can then spin forever in its
    # final garbage collection (seen with grpcio 1.85 and tokenizers' threads: the
    # process logged its stop and never exited, so SIGTERM looked like a hang), so the
    # daemon leaves at once, after flushing what it wrote.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    restore_native_stderr()
    os._exit(code)
