"""`solora-node infer`: generate with a checkpoint's implicit mixture of experts."""

from __future__ import annotations

import argparse
import logging

import torch

from solora_node.commands._common import add_checkpoint_args, emit_json
from solora_node.data_dir import find_adapter

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "infer", help="generate with a checkpoint's implicit mixture of experts"
    )
    add_checkpoint_args(parser)
    parser.add_argument(
        "--task",
        default="auto",
        help="a task name (its expert alone), auto (route by the prompt, default), "
        "merge (all experts, g = 1) or base (no adapter)",
    )
    parser.add_argument(
        "--router",
        choices=["top1", "soft"],
        default="top1",
        help="auto: use the best expert only, or softmax weights over all",
    )
    parser.add_argument(
        "--beta", type=float, default=20.0, help="softmax sharpness for --router soft"
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("text", help="the prompt")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    # Imported here so that `solora-node --help` stays fast.
    from solora_node.adapter.checkpoint import config_from_manifest, load_checkpoint, read_manifest
    from solora_node.adapter.inference import answer, check_gate_choice

    # Refuse a bad folder or task name before spending seconds on loading the model.
    folder = find_adapter(args.checkpoint)
    check_gate_choice(config_from_manifest(read_manifest(folder)).tasks, args.task)
    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(folder, args.cache_dir)
    result = answer(
        loaded.so,
        loaded.base.tokenizer,
        args.text,
        args.task,
        router=args.router,
        beta=args.beta,
        max_new_tokens=args.max_new_tokens,
    )
    if args.json:
        emit_json({"text": result.text, "gate": result.gate, "routing": result.routing})
    else:
        if result.routing:
            log.info("routing weights: %s", result.routing)
        print(result.text)
    return 0
