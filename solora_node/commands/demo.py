"""`solora-node demo`: a local federation of real node processes on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from solora_node.commands._common import emit_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="a local federation on this machine (separate processes on loopback)"
    )
    parser.add_argument("--nodes", type=int, default=4, help="node processes (default 4)")
    parser.add_argument("--tasks", type=int, default=2, help="built-in tasks (default 2)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per node")
    parser.add_argument("--model", choices=("default", "tiny"), default="default")
    parser.add_argument("--steps-per-round", type=int, default=None)
    parser.add_argument("--eval-examples", type=int, default=None)
    parser.add_argument("--workdir", type=Path, help="keep configs, logs and checkpoints here")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from solora_node.demo import DemoPlan, format_summary, run_demo
    from solora_node.errors import SoloraError

    tiny = args.model == "tiny"
    plan = DemoPlan(
        nodes=args.nodes,
        tasks=args.tasks,
        rounds=args.rounds or (6 if tiny else 12),
        model=args.model,
        steps_per_round=args.steps_per_round or (4 if tiny else 6),
        eval_examples=args.eval_examples or (16 if tiny else 48),
        workdir=args.workdir,
    )
    if plan.nodes < 1 or plan.tasks < 1 or plan.rounds < 1:
        raise SoloraError("demo: --nodes, --tasks and --rounds must be positive")
    result = run_demo(plan)
    if args.json:
        emit_json(result)
    else:
        print(format_summary(result))
    return 0
