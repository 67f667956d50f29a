"""`bench poisoning`: accuracy of a same-task cluster when 1 of its 5 peers is poisoned.

Five devices of one task on a complete graph (one cluster, Metropolis weights 1/5) run the
sim harness's SO-LoRA rounds; device `--poisoner` trains honestly but every block it sends
arrives scaled (x -scale) or random (scale x the honest RMS). Each aggregation rule runs
clean and poisoned; the figure is the mean own-task accuracy of the four honest devices.
The claim checked: robust rules (median / trimmed mean, with norm clipping) stay
within 2 points of the clean run; plain averaging degrades.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from solora_node.config import ModelSection
from solora_node.sim.config import SimConfig, SimConfigError
from solora_node.sim.devices import build_devices, eval_sets
from solora_node.sim.poison import POISONS
from solora_node.sim.runner import run_method
from solora_node.sim.topology import build_topology

log = logging.getLogger(__name__)

# (name, aggregation overrides); clip_norm is filled from --clip-norm.
RULES: dict[str, dict[str, Any]] = {
    "mean": {"aggregation": "mean"},
    "median+clip": {"aggregation": "median", "clip": True},
    "trimmed_mean+clip": {"aggregation": "trimmed_mean", "trim_fraction": 0.2, "clip": True},
}
TOLERANCE = 0.02  # the "within 2 points"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="default, tiny or a local HF folder")
    parser.add_argument("--cache-dir", type=Path, default=ModelSection().cache_dir)
    parser.add_argument("--task", default="topic", help="built-in task of the cluster")
    parser.add_argument("--devices", type=int, default=5)
    parser.add_argument("--poisoner", type=int, default=4, help="index of the poisoned device")
    parser.add_argument("--poisons", nargs="+", default=list(POISONS), choices=POISONS)
    parser.add_argument("--scale", type=float, default=50.0, help="poison strength")
    parser.add_argument(
        "--clip-norm",
        type=float,
        default=None,
        help="L2 bound on a neighbour block's difference to own (robust rules only); "
        "default: 2x the median honest distance measured in the clean run",
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-steps", type=int, default=3)
    parser.add_argument("--eval-limit", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)


def honest_accuracy(run: dict[str, Any], task: str, poisoners: tuple[int, ...]) -> float:
    """Mean own-task accuracy of the devices that are not poisoners."""
    per_device = run["device_accuracy"]
    values = [acc[task] for i, acc in enumerate(per_device) if i not in poisoners]
    return float(np.mean(values))


def base_config(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        model=args.model,
        tasks=(args.task,),
        devices_per_task=(args.devices,),
        rounds=args.rounds,
        local_steps=args.local_steps,
        warmup_steps=2,
        batch_size=4,
        max_seq_len=64,
        rank=8,
        alpha=16.0,
        topology="complete",
        methods=("solora",),
        ablation_topologies=(),
        eval_limit=args.eval_limit,
        eval_every=args.rounds,
        max_train_examples=0,
        seed=args.seed,
        threads=args.threads,
        poison_scale=args.scale,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not 0 <= args.poisoner < args.devices:
        raise SimConfigError(f"--poisoner {args.poisoner}: expected 0..{args.devices - 1}")
    torch.set_num_threads(args.threads)
    base = base_config(args)
    base.check()
    devices = build_devices(base)
    evals = eval_sets(devices, base.eval_limit)
    topology = build_topology(base.topology, devices, base)
    poisoners = (args.poisoner,)
    started = time.monotonic()
    runs: dict[str, Any] = {}
    cache = Path(args.cache_dir)

    def measure(label: str, config: SimConfig) -> float:
        config.check()
        result = run_method("solora", config, devices, topology, evals, cache)
        accuracy = honest_accuracy(result, args.task, poisoners)
        runs[label] = {
            "honest_accuracy": accuracy,
            "device_accuracy": [a[args.task] for a in result["device_accuracy"]],
            "consensus_final": result["consensus_final"],
            "neighbour_distance": result["neighbour_distance"],
            "seconds": result["seconds"],
        }
        log.info("poisoning %s: honest accuracy %.3f", label, accuracy)
        return accuracy

    clean = measure("clean/mean", dataclasses.replace(base, aggregation="mean"))
    # Clipping is calibrated on clean traffic, as an operator would set it.
    clip_norm = args.clip_norm or 2.0 * runs["clean/mean"]["neighbour_distance"]["median"]
    verdicts: dict[str, dict[str, Any]] = {}
    for poison in args.poisons:
        for rule, spec in RULES.items():
            config = dataclasses.replace(
                base,
                aggregation=spec["aggregation"],
                trim_fraction=spec.get("trim_fraction", base.trim_fraction),
                clip_norm=clip_norm if spec.get("clip") else 0.0,
                poisoners=poisoners,
                poison=poison,
            )
            accuracy = measure(f"{poison}/{rule}", config)
            verdicts[f"{poison}/{rule}"] = {
                "drop_vs_clean": clean - accuracy,
                "within_2_points": clean - accuracy <= TOLERANCE,
            }
    robust_ok = all(v["within_2_points"] for k, v in verdicts.items() if "+clip" in k)
    mean_degrades = all(not v["within_2_points"] for k, v in verdicts.items() if "/mean" in k)
    return {
        "model": args.model,
        "task": args.task,
        "devices": args.devices,
        "poisoner": args.poisoner,
        "scale": args.scale,
        "clip_norm": clip_norm,
        "rounds": args.rounds,
        "local_steps": args.local_steps,
        "eval_examples": len(evals[args.task].eval),
        "clean_accuracy": clean,
        "runs": runs,
        "verdicts": verdicts,
        "robust_within_2_points": robust_ok,
        "mean_degrades": mean_degrades,
        "seconds": time.monotonic() - started,
    }


__all__ = ["add_arguments", "run"]
