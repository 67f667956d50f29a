"""`solora-node serve`: an OpenAI-compatible HTTP API over a checkpoint's experts."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from pydantic import ValidationError

from solora_node.commands._common import add_checkpoint_args, emit_json
from solora_node.config import ConfigError, ServingSection, validation_problems

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="an OpenAI-compatible HTTP API over a checkpoint's experts"
    )
    add_checkpoint_args(parser)
    defaults = ServingSection()
    parser.add_argument("--host", default=defaults.host, help="bind address (loopback default)")
    parser.add_argument("--port", type=int, default=defaults.port, help="0 picks a free one")
    parser.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="requests running or waiting; beyond it requests get HTTP 429",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=defaults.max_tokens, help="largest max_tokens allowed"
    )
    parser.add_argument(
        "--default-max-tokens",
        type=int,
        default=defaults.default_max_tokens,
        help="max_tokens of a request that does not say",
    )
    parser.add_argument(
        "--router",
        choices=["top1", "soft"],
        default=defaults.router,
        help="model auto: the best expert only, or softmax weights over all",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (url, port, models) when ready"
    )
    parser.set_defaults(handler=handle)


def settings_from_args(args: argparse.Namespace) -> ServingSection:
    try:
        return ServingSection(
            enabled=True,
            host=args.host,
            port=args.port,
            max_queue=args.max_queue,
            max_tokens=args.max_tokens,
            default_max_tokens=args.default_max_tokens,
            router=args.router,
        )
    except ValidationError as err:
        problems = [p.replace(" = ", " ", 1) for p in validation_problems(err)]
        raise ConfigError([f"--{p.replace('_', '-')}" for p in problems]) from None


def handle(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    # Imported here so that `solora-node --help` stays fast.
    import torch

    from solora_node.adapter.checkpoint import load_checkpoint, read_manifest

    read_manifest(args.checkpoint)  # a bad folder fails before seconds of model loading
    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.checkpoint, args.cache_dir)
    return asyncio.run(_serve(loaded, settings, args.json))


async def _serve(loaded: Any, settings: ServingSection, as_json: bool) -> int:
    from solora_node.serving.service import make_engine, start_api

    engine = make_engine(loaded.so, loaded.base.tokenizer, settings, loaded.manifest.get("round"))
    server = await start_api(engine, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{server.port}/v1"
    log.info("serving models %s on %s", ", ".join(engine.model_ids()), url)
    if as_json:
        emit_json({"url": url, "port": server.port, "models": engine.model_ids()})
    await stop.wait()
    await server.stop()
    log.info("stopped serving")
    return 0
