"""`solora-node sim`: in-process multi-device experiment (LoRA, LoRI, SO-LoRA, hard MoE,
local) on one shared base model; results.json, a markdown table and plots in --out."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from solora_node.commands._common import emit_json
from solora_node.config import ModelSection
from solora_node.errors import SoloraError

if TYPE_CHECKING:
    from solora_node.sim.config import SimConfig

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sim", help="in-process multi-device experiment (the paper's comparison)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="sim config file (YAML or JSON)")
    source.add_argument(
        "--preset", help="paper-tiny (tests, < 2 min) or paper (~50 min on one core)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, help="write results.json, results.md and PNGs here")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument(
        "--methods",
        help="comma-separated runs instead of the config's methods and ablation, e.g. "
        "'solora,lora' or 'solora@random' (one process per method and seed splits a study)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in --out/results.partial.json (same config) and run the rest",
    )
    parser.add_argument("--cache-dir", type=Path, default=ModelSection().cache_dir)
    parser.add_argument(
        "--base-cache",
        type=Path,
        help="JSON file keeping the base model's results across runs of one seed",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from solora_node.sim import PRESETS, load_sim_config, run_experiment
    from solora_node.sim.report import markdown_table, write_outputs
    from solora_node.sim.runner import summary_json

    if args.preset is not None:
        if args.preset not in PRESETS:
            raise SoloraError(f"--preset {args.preset!r}: expected one of {sorted(PRESETS)}")
        config = PRESETS[args.preset]
    else:
        config = load_sim_config(args.config)
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    if args.methods is not None:
        config = with_runs(config, args.methods)
    previous = None
    if args.resume:
        if args.out is None:
            raise SoloraError("--resume: needs --out, the folder of the stopped run")
        partial = args.out / "results.partial.json"
        if partial.is_file():
            try:
                previous = json.loads(partial.read_text())
            except ValueError as err:
                raise SoloraError(f"--resume: {partial} is not valid JSON ({err})") from None
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    def save_partial(partial: dict[str, object]) -> None:
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "results.partial.json").write_text(json.dumps(partial, indent=1) + "\n")

    results = run_experiment(
        config,
        args.cache_dir,
        preset=args.preset,
        on_progress=save_partial,
        previous=previous,
        base_cache=args.base_cache,
    )
    if args.out is not None:
        for path in write_outputs(results, args.out):
            log.info("wrote %s", path)
    if args.json:
        emit_json(summary_json(results))
    else:
        sys.stdout.write(markdown_table(results))
    return 0


def with_runs(config: SimConfig, spec: str) -> SimConfig:
    """The config with --methods' runs: plain names are methods, solora@TOPOLOGY ablations."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise SoloraError("--methods: expected a comma-separated list of methods")
    methods = tuple(n for n in names if "@" not in n)
    ablations = []
    for name in names:
        if "@" in name:
            method, _, topology = name.partition("@")
            if method != "solora":
                raise SoloraError(f"--methods: {name!r}; only solora@TOPOLOGY ablations exist")
            ablations.append(topology)
    updated = dataclasses.replace(config, methods=methods, ablation_topologies=tuple(ablations))
    updated.check()
    return updated
