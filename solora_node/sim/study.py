"""A study: the learning-rate choice on validation, then every method over several seeds,
each run a separate `solora-node sim` process (one method, one seed, one learning rate).

Runs are jobs in folders under the study's folder; a job whose results.json exists is
done and is never run again, so a stopped study resumes where it stopped, and several
`--jobs` run side by side (one torch thread each). The choice reads validation accuracy
only (the last round's `validation` entry); eval results are never looked at to choose.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from solora_node.errors import SoloraError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One `sim` process: a run (method or solora@topology), a seed, overrides."""

    run: str
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        parts = [self.run.replace("@", "-at-"), f"seed{self.seed}"]
        parts += [f"{k}{_short(v)}" for k, v in sorted(self.overrides.items())]
        return "_".join(parts)

    def config(self, base: dict[str, Any]) -> dict[str, Any]:
        return {**base, **self.overrides, "seed": self.seed}


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "-".join(f"{k}{_short(v)}" for k, v in sorted(value.items()))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _method(run: str) -> str:
    return run.split("@", 1)[0]


def job_results(root: Path, job: Job) -> dict[str, Any] | None:
    path = root / job.name / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_jobs(root: Path, base: dict[str, Any], jobs: list[Job], parallel: int) -> None:
    """Run the jobs not done yet, `parallel` at a time; each writes its own folder."""
    todo = [job for job in jobs if job_results(root, job) is None]
    log.info("study: %d of %d jobs to run, %d at a time", len(todo), len(jobs), parallel)

    def one(job: Job) -> None:
        folder = root / job.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(job.config(base), sort_keys=True))
        started = time.monotonic()
        with (folder / "log.txt").open("w") as out:
            code = subprocess.call(
                [
                    sys.executable,
                    "-m",
                    "solora_node",
                    "sim",
                    "--config",
                    str(folder / "config.yaml"),
                    "--methods",
                    job.run,
                    "--out",
                    str(folder),
                    "--resume",
                    "--json",
                    "--base-cache",
                    str(root / f"base-seed{job.seed}.json"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        took = time.monotonic() - started
        if code != 0:
            log.error(
                "study: %s failed (exit %d) after %.0f s; see %s",
                job.name,
                code,
                took,
                folder / "log.txt",
            )
        else:
            log.info("study: %s done in %.0f s", job.name, took)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, todo))


def run_entry(results: dict[str, Any], run: str) -> dict[str, Any]:
    """A job's results for its run (a method, or solora@TOPOLOGY from the ablation)."""
    if "@" in run:
        return dict(results["ablation"][run.split("@", 1)[1]])
    return dict(results["methods"][run])


def validation_score(results: dict[str, Any], run: str) -> float:
    entry = run_entry(results, run)
    last = entry["rounds"][-1]
    if "validation" not in last:
        raise SoloraError(f"study: {run} has no validation result; expected validate_at_end")
    return float(last["validation"]["avg_accuracy"])


def choose_lr(root: Path, grid: dict[str, list[float]], seed: int) -> dict[str, float]:
    """Per method, the grid learning rate with the best final validation accuracy (ties:
    the smaller rate). Reads validation only."""
    chosen: dict[str, float] = {}
    for method, rates in grid.items():
        scored = []
        for lr in rates:
            results = job_results(root, Job(method, seed, {"lr_by_method": {method: lr}}))
            if results is not None:
                scored.append((validation_score(results, method), -lr, lr))
        if scored:
            chosen[method] = max(scored)[2]
    return chosen


# The learning-rate grid per method (3x apart). It began at {6e-3, 2e-2, 6e-2} for SO-LoRA,
# {2e-3, 6e-3} for LoRA-DFL and hard MoE and {6e-3, 2e-2} for LoRI, and was extended by one
# step wherever the best validation score sat on the grid's upper edge (docs/results.md).
# `local` shares LoRA's choice (the same adapter, without communication), solora@TOPOLOGY
# shares SO-LoRA's.
GRID: dict[str, list[float]] = {
    "solora": [6e-3, 2e-2, 6e-2, 0.2],
    "lora": [2e-3, 6e-3, 2e-2],
    "hard_moe": [2e-3, 6e-3, 2e-2],
    "lori": [6e-3, 2e-2, 6e-2, 0.2, 0.6],
}
FOLLOWS = {"local": "lora"}


def lr_job(run: str, seed: int, lr: float) -> Job:
    return Job(run, seed, {"lr_by_method": {_method(run): lr}})


def selection_jobs(grid: dict[str, list[float]], seed: int) -> list[Job]:
    return [lr_job(method, seed, lr) for method, rates in grid.items() for lr in rates]


def seed_jobs(runs: list[str], chosen: dict[str, float], seeds: list[int]) -> list[Job]:
    """Every run at its method's chosen rate (a run whose rate is unknown is skipped).

    Runs with a learning rate of their own (the compared methods) come first, seed after
    seed, then those that borrow one (local, solora@TOPOLOGY): a study stopped early has
    the main comparison over as many seeds as it could.
    """
    jobs = []
    borrowing = [r for r in runs if "@" in r or _method(r) in FOLLOWS]
    for group in ([r for r in runs if r not in borrowing], borrowing):
        for seed in seeds:
            for run in group:
                method = _method(run)
                lr = chosen.get(FOLLOWS.get(method, method))
                if lr is not None:
                    jobs.append(lr_job(run, seed, lr))
    return jobs


def pareto_jobs(
    chosen_lr: float, base_density: float, densities: list[float], seeds: list[int]
) -> list[Job]:
    """SO-LoRA at other densities, each with the learning rate scaled as 1/density from the
    rate chosen at the base density (the daemon's rule, docs/method.md): the rule is what
    is tested, no rate is tuned per density."""
    return [
        Job(
            "solora",
            seed,
            {"density": density, "lr_by_method": {"solora": chosen_lr * base_density / density}},
        )
        for seed in seeds
        for density in densities
        if density != base_density
    ]
