"""`solora-node bench NAME`: measured figures, one JSON object with --json."""

from __future__ import annotations

import argparse
import importlib
import json

from solora_node.commands._common import emit_json
from solora_node.errors import NotBuiltYet

BENCHMARKS = {
    "payload": "bytes on the wire per round: LoRA vs LoRI vs SO-LoRA (issue 3)",
    "train": "seconds per local step: PEFT LoRA vs SO-LoRA (issue 3)",
    "codec": "encode/decode throughput vs memcpy (issue 4)",
    "net": "gRPC streamed exchange vs raw TCP on loopback (issue 4)",
    "routing": "implicit-MoE auto-routing accuracy on the default model (issue 3)",
    "soak": "N-node loopback federation for R rounds: RSS/fd growth per node (issue 8)",
    "poisoning": "1 of 5 same-task peers poisoned: accuracy per aggregation rule (issue 8)",
    "serve": "OpenAI-compatible API: requests/s, latency, tokens/s, auto-routing cost",
}
ISSUE_OF = {"payload": 3, "train": 3, "codec": 4, "net": 4, "routing": 3, "soak": 8, "poisoning": 8}


def _module(name: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(f"solora_node.benchmarks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"solora_node.benchmarks.{name}":
            return None
        raise


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks: " + ", ".join(BENCHMARKS))
    kinds = parser.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, help_text in BENCHMARKS.items():
        sub = kinds.add_parser(name, help=help_text)
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        module = _module(name)
        if module is not None:
            module.add_arguments(sub)
        sub.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    module = _module(args.bench)
    if module is None:
        raise NotBuiltYet(f"solora-node bench {args.bench}", issue=ISSUE_OF[args.bench])
    result = module.run(args)
    if args.json:
        emit_json(result)
    else:
        print(json.dumps(result, indent=2, sort_keys=True))
    return 0
