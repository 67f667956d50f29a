"""`solora-node bench NAME`: measured figures, one JSON object with --json."""

from __future__ import annotations

import argparse
import importlib
import json

from solora_node.commands._common import emit_json

BENCHMARKS = {
    "payload": "bytes on the wire per round: LoRA vs LoRI vs SO-LoRA",
    "train": "seconds per local step: PEFT LoRA vs SO-LoRA",
    "codec": "encode/decode/checksum/validation throughput vs memcpy",
    "net": "streamed exchange vs bare gRPC vs raw TCP (with TLS) on loopback",
    "routing": "implicit-MoE auto-routing accuracy on the default model",
    "soak": "N-node loopback federation for R rounds: RSS/fd growth per node",
    "poisoning": "1 of 5 same-task peers poisoned: accuracy per aggregation rule",
    "idle": "CPU per tiny-model node with rounds unpaced vs paced (rounds.* defaults)",
    "serve": "OpenAI-compatible API: requests/s, latency, tokens/s, auto-routing cost",
    "scale": "topology planning and per-node round costs as nodes and tasks grow",
    "util": "netns testbed, default model, slow lossy links: share of time in training",
    "fleet": "netns testbed, as many tiny-model daemons as fit: discovery, rounds, CPU, RAM",
}


def _module(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"solora_node.benchmarks.{name}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks: " + ", ".join(BENCHMARKS))
    kinds = parser.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, help_text in BENCHMARKS.items():
        sub = kinds.add_parser(name, help=help_text)
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        _module(name).add_arguments(sub)
        sub.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    result = _module(args.bench).run(args)
    if args.json:
        emit_json(result)
    else:
        print(json.dumps(result, indent=2, sort_keys=True))
    return 0
