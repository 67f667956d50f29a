"""`solora-node study`: the learning-rate choice on validation, then every method over
several seeds, as separate `sim` processes in one folder; `report` merges them."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from solora_node.errors import SoloraError

STAGES = ("select", "seeds", "pareto", "report")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("study", help="lr choice on validation, seeds, intervals")
    parser.add_argument(
        "stage",
        choices=STAGES,
        help="select: run the lr grid (seed 0); "
        "seeds: every run at its chosen lr for each seed; "
        "pareto: SO-LoRA at other densities (lr scaled as 1/density); report: merge",
    )
    parser.add_argument("--out", type=Path, required=True, help="the study's folder")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", default="study", help="sim preset (default: study)")
    source.add_argument("--config", type=Path, help="sim config file (your own tasks)")
    parser.add_argument("--jobs", type=int, default=1, help="sim processes side by side")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument(
        "--runs",
        default="solora,lora,hard_moe,lori,local,solora@random",
        help="runs of the seeds stage (methods, solora@TOPOLOGY)",
    )
    parser.add_argument(
        "--grid",
        help="learning rates to choose from, e.g. 'solora=0.006,0.02;lora=0.002,0.006' "
        "(default: the grid in docs/results.md)",
    )
    parser.add_argument(
        "--densities",
        default="0.05,0.25,0.5",
        help="SO-LoRA densities of the pareto stage and report (default 0.05,0.25,0.5)",
    )
    parser.set_defaults(handler=handle)


def parse_densities(text: str) -> list[float]:
    try:
        values = [float(d) for d in text.split(",") if d.strip()]
    except ValueError:
        raise SoloraError(f"--densities: {text!r}; expected numbers in (0, 1]") from None
    if not values or not all(0 < d <= 1 for d in values):
        raise SoloraError(f"--densities: {text!r}; expected numbers in (0, 1]")
    return values


def parse_grid(text: str) -> dict[str, list[float]]:
    grid: dict[str, list[float]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        method, _, rates = part.partition("=")
        try:
            grid[method.strip()] = [float(r) for r in rates.split(",") if r.strip()]
        except ValueError:
            raise SoloraError(f"--grid: {part!r}; expected METHOD=LR,LR,...") from None
        if not grid[method.strip()]:
            raise SoloraError(f"--grid: {part!r} lists no learning rate")
    return grid


def handle(args: argparse.Namespace) -> int:
    from solora_node.sim import study

    if args.jobs < 1 or args.seeds < 1:
        raise SoloraError("--jobs and --seeds: expected >= 1")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    from solora_node.sim.config import from_mapping, read_sim_mapping

    base: dict[str, object] = (
        read_sim_mapping(args.config) if args.config else {"preset": args.preset}
    )
    config = from_mapping(dict(base))
    config.check()  # a bad config fails here, not in every job
    densities = parse_densities(args.densities)
    grid = parse_grid(args.grid) if args.grid else study.GRID
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "select":
        study.run_jobs(args.out, base, study.selection_jobs(grid, 0), args.jobs)
    chosen = study.choose_lr(args.out, grid, 0)
    (args.out / "chosen.json").write_text(json.dumps(chosen, indent=1) + "\n")
    if args.stage == "seeds":
        runs = [r.strip() for r in args.runs.split(",") if r.strip()]
        jobs = study.seed_jobs(runs, chosen, list(range(args.seeds)))
        study.run_jobs(args.out, base, jobs, args.jobs)
    if args.stage == "pareto":
        if "solora" not in chosen:
            raise SoloraError("study pareto: no SO-LoRA learning rate chosen yet; run select")
        jobs = study.pareto_jobs(
            chosen["solora"], config.density, densities, list(range(args.seeds))
        )
        study.run_jobs(args.out, base, jobs, args.jobs)
    if args.stage == "report":
        from solora_node.sim.study_report import write_report

        runs = [r.strip() for r in args.runs.split(",") if r.strip()]
        pareto = (config.density, densities)
        for path in write_report(args.out, runs, chosen, list(range(args.seeds)), grid, pareto):
            logging.getLogger(__name__).info("wrote %s", path)
    return 0
