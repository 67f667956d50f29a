"""A study's merged results: mean accuracy over seeds with 95% bootstrap intervals over
examples and seeds, paired differences between runs, the targets, curves and plots.

Intervals: each bootstrap draw resamples the seeds, then within each drawn seed the
scored examples of each task (the same draw for every run, so differences are paired:
runs of one seed share the eval set). A difference is called a win or a loss only when
its interval excludes zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from solora_node.sim.study import Job, job_results, lr_job, run_entry

DRAWS = 2000
TARGET_GAIN_OVER_LORA = 0.05
TARGET_GAP_TO_MOE = 0.01
TARGET_BYTES_VS_MOE = 0.25
TARGET_BYTES_SAVING = 0.90


@dataclass
class Arm:
    """One row of the comparison: a run (and gate) with its per-seed results."""

    label: str
    run: str
    lr: float
    # seed -> task -> per example accuracy (mean over the devices that scored it)
    examples: dict[int, dict[str, np.ndarray]]
    bytes_total: dict[int, int]
    # seed -> [(round, avg accuracy, cumulative bytes)] at the evaluated rounds
    curve: dict[int, list[tuple[int, float, int]]]
    validation: dict[int, float]
    extra: dict[str, Any]


def _arms_of(run: str, results: dict[int, dict[str, Any]], lr: float, label: str) -> list[Arm]:
    gates = [("per_example", "avg_accuracy", "")]
    first = run_entry(next(iter(results.values())), run)
    if "per_example_oracle" in first:
        gates = [
            ("per_example", "avg_accuracy", " (auto gate)"),
            ("per_example_oracle", "avg_accuracy_oracle", " (oracle gate)"),
        ]
    arms = []
    for key, avg_key, suffix in gates:
        examples, sizes, curves, validation = {}, {}, {}, {}
        extra: dict[str, Any] = {}
        for seed, res in results.items():
            entry = run_entry(res, run)
            examples[seed] = {t: np.asarray(v, dtype=float) for t, v in entry[key].items()}
            sizes[seed] = int(entry["bytes_total"])
            curves[seed] = [
                (r["round"], float(r[avg_key]), int(r["bytes_cumulative"]))
                for r in entry["rounds"]
                if avg_key in r
            ]
            last = entry["rounds"][-1]
            if "validation" in last:
                validation[seed] = float(
                    last["validation"].get(avg_key, last["validation"]["avg_accuracy"])
                )
            for name in ("routing_accuracy", "collision_rate", "seconds"):
                if name in entry:
                    extra.setdefault(name, {})[seed] = entry[name]
        arms.append(Arm(label + suffix, run, lr, examples, sizes, curves, validation, extra))
    return arms


def collect(
    root: Path, runs: list[str], chosen: dict[str, float], seeds: list[int]
) -> tuple[list[Arm], dict[int, dict[str, np.ndarray]]]:
    """The arms with results for every seed asked for, and the base model's results."""
    from solora_node.sim.study import FOLLOWS, _method

    arms: list[Arm] = []
    base: dict[int, dict[str, np.ndarray]] = {}
    for run in runs:
        method = _method(run)
        lr = chosen.get(FOLLOWS.get(method, method))
        if lr is None:
            continue
        found = {s: job_results(root, lr_job(run, s, lr)) for s in seeds}
        have = {s: r for s, r in found.items() if r is not None}
        if not have:
            continue
        for seed, res in have.items():
            base.setdefault(
                seed,
                {
                    t: np.asarray(v, dtype=float)
                    for t, v in res["base_accuracy"]["per_example"].items()
                },
            )
        arms += _arms_of(run, have, lr, run)
    return arms, base


def _draws(
    seeds: list[int], sizes: dict[int, dict[str, int]], rng: np.random.Generator
) -> list[list[tuple[int, dict[str, np.ndarray]]]]:
    out = []
    for _ in range(DRAWS):
        picked = rng.choice(seeds, size=len(seeds), replace=True)
        out.append(
            [
                (int(s), {t: rng.integers(0, n, size=n) for t, n in sizes[int(s)].items()})
                for s in picked
            ]
        )
    return out


def _score(examples: dict[int, dict[str, np.ndarray]], draw: list[Any] | None) -> float:
    """Mean over (drawn) seeds of the mean over tasks of the (drawn) examples' accuracy."""
    if draw is None:
        return float(
            np.mean([np.mean([v.mean() for v in ex.values()]) for ex in examples.values()])
        )
    return float(
        np.mean(
            [np.mean([examples[s][t][idx].mean() for t, idx in rows.items()]) for s, rows in draw]
        )
    )


def _task_score(
    examples: dict[int, dict[str, np.ndarray]], task: str, draw: list[Any] | None
) -> float:
    if draw is None:
        return float(np.mean([ex[task].mean() for ex in examples.values()]))
    return float(np.mean([examples[s][task][rows[task]].mean() for s, rows in draw]))


def interval(values: list[float]) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def analyse(arms: list[Arm], base: dict[int, dict[str, np.ndarray]]) -> dict[str, Any]:
    """Means, intervals and paired differences over the seeds every arm has."""
    seeds = sorted(set.intersection(*(set(a.examples) for a in arms)) & set(base))
    sizes = {s: {t: len(v) for t, v in base[s].items()} for s in seeds}
    rng = np.random.default_rng(0)
    draws = _draws(seeds, sizes, rng)
    tasks = sorted(base[seeds[0]])

    def restrict(ex: dict[int, dict[str, np.ndarray]]) -> dict[int, dict[str, np.ndarray]]:
        return {s: ex[s] for s in seeds}

    everyone = {a.label: restrict(a.examples) for a in arms}
    everyone["base model"] = restrict(base)
    boot = {label: [_score(ex, d) for d in draws] for label, ex in everyone.items()}
    summary: dict[str, Any] = {"seeds": seeds, "examples_per_task": sizes[seeds[0]], "arms": {}}
    for label, ex in everyone.items():
        arm = next((a for a in arms if a.label == label), None)
        row: dict[str, Any] = {
            "mean": _score(ex, None),
            "interval": interval(boot[label]),
            "per_task": {t: _task_score(ex, t, None) for t in tasks},
            "per_task_interval": {
                t: interval([_task_score(ex, t, d) for d in draws]) for t in tasks
            },
        }
        if arm is not None:
            row.update(
                run=arm.run,
                lr=arm.lr,
                bytes_mean=float(np.mean([arm.bytes_total[s] for s in seeds])),
                validation_mean=float(np.mean([arm.validation[s] for s in seeds]))
                if all(s in arm.validation for s in seeds)
                else None,
                curve=_mean_curve(arm, seeds),
                **{k: v for k, v in arm.extra.items() if k != "seconds"},
                seconds_mean=float(np.mean(list(arm.extra.get("seconds", {0: 0}).values()))),
            )
        summary["arms"][label] = row
    summary["differences"] = {}

    def diff(a: str, b: str) -> dict[str, Any]:
        values = [x - y for x, y in zip(boot[a], boot[b], strict=True)]
        mean = summary["arms"][a]["mean"] - summary["arms"][b]["mean"]
        low, high = interval(values)
        verdict = "win" if low > 0 else "loss" if high < 0 else "no clear difference"
        return {"mean": mean, "interval": (low, high), "verdict": verdict}

    labels = [a.label for a in arms]
    for a in labels:
        for b in [*labels, "base model"]:
            if a != b:
                summary["differences"][f"{a} - {b}"] = diff(a, b)
    summary["interference"] = _interference(arms, seeds, draws, tasks)
    return summary


def _mean_curve(arm: Arm, seeds: list[int]) -> list[tuple[int, float, float]]:
    """(round, mean accuracy over seeds, mean cumulative bytes) at the evaluated rounds."""
    rounds = sorted({r for s in seeds for r, _, _ in arm.curve[s]})
    out = []
    for round_ in rounds:
        points = [(acc, b) for s in seeds for r, acc, b in arm.curve[s] if r == round_]
        if len(points) == len(seeds):
            out.append(
                (
                    round_,
                    float(np.mean([p[0] for p in points])),
                    float(np.mean([p[1] for p in points])),
                )
            )
    return out


def _interference(
    arms: list[Arm], seeds: list[int], draws: list[Any], tasks: list[str]
) -> dict[str, Any]:
    """Per task: each arm's accuracy minus the task's own expert's (hard MoE: an adapter
    trained on that task's data alone), with intervals. Negative = interference."""
    reference = next((a for a in arms if a.run == "hard_moe"), None)
    if reference is None:
        return {}
    ref = {s: reference.examples[s] for s in seeds}
    out: dict[str, Any] = {}
    for arm in arms:
        if arm is reference:
            continue
        mine = {s: arm.examples[s] for s in seeds}
        out[arm.label] = {}
        for task in tasks:
            values = [_task_score(mine, task, d) - _task_score(ref, task, d) for d in draws]
            mean = _task_score(mine, task, None) - _task_score(ref, task, None)
            out[arm.label][task] = {"mean": mean, "interval": interval(values)}
    return out


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparison's targets, each met or not, with the measured figure."""
    arms, diffs = summary["arms"], summary["differences"]
    auto, oracle = "solora (auto gate)", "solora (oracle gate)"
    rows: list[dict[str, Any]] = []

    def add(name: str, figure: str, met: bool | None) -> None:
        rows.append({"target": name, "measured": figure, "met": met})

    def fmt(d: dict[str, Any]) -> str:
        low, high = d["interval"]
        return f"{100 * d['mean']:+.1f} pts [{100 * low:+.1f}, {100 * high:+.1f}]"

    if auto in arms and "lora" in arms:
        d = diffs[f"{auto} - lora"]
        add(
            "SO-LoRA (auto) above LoRA-DFL by >= 5 pts, interval excluding 0",
            fmt(d),
            d["mean"] >= TARGET_GAIN_OVER_LORA and d["interval"][0] > 0,
        )
    if auto in arms and "hard_moe" in arms:
        d = diffs[f"hard_moe - {auto}"]
        share = arms[auto]["bytes_mean"] / arms["hard_moe"]["bytes_mean"]
        add(
            "within 1 pt of hard MoE at <= 25% of its bytes",
            f"hard MoE minus SO-LoRA {fmt(d)}; bytes {100 * share:.1f}% of hard MoE's",
            d["mean"] <= TARGET_GAP_TO_MOE and share <= TARGET_BYTES_VS_MOE,
        )
    if auto in arms and "lora" in arms:
        saving = bytes_to_reach(arms[auto]["curve"], arms["lora"])
        add(
            ">= 90% fewer bytes than LoRA-DFL to reach LoRA-DFL's final accuracy",
            "not reached in the rounds run" if saving is None else f"{100 * saving:.1f}% fewer",
            None if saving is None else saving >= TARGET_BYTES_SAVING,
        )
    if auto in arms and "lori" in arms:
        d = diffs[f"{auto} - lori"]
        add("above LoRI (interval excluding 0)", fmt(d), d["interval"][0] > 0)
    if auto in arms and oracle in arms:
        d = diffs[f"{oracle} - {auto}"]
        add(
            "auto gate within 1 pt of the oracle gate",
            f"oracle minus auto {fmt(d)}",
            d["mean"] <= TARGET_GAP_TO_MOE,
        )
    for row in rows:
        if row["met"] is None:
            row["met"] = False
    return rows


def bytes_to_reach(curve: list[tuple[int, float, float]], lora: dict[str, Any]) -> float | None:
    """1 - (SO-LoRA's bytes at its first evaluated round at or above LoRA's final mean
    accuracy) / (LoRA's total bytes); None if it never got there."""
    goal = lora["mean"]
    for _, accuracy, sent in curve:
        if accuracy >= goal:
            return 1 - sent / lora["bytes_mean"]
    return None


def summarise(
    arms: list[Arm], base: dict[int, dict[str, np.ndarray]], seeds: list[int]
) -> dict[str, Any]:
    """The main comparison over `seeds` (the runs that have them all) with its targets, and
    the runs with fewer seeds against everyone on the seeds they all have."""
    complete = [a for a in arms if set(seeds) <= set(a.examples)] or arms
    summary = analyse(complete, base)
    summary["targets"] = targets(summary)
    if len(complete) < len(arms):
        fewer = analyse(arms, base)
        fewer["partial_runs"] = [a.label for a in arms if a not in complete]
        summary["fewer_seeds"] = fewer
        named = {row["target"] for row in summary["targets"]}
        for row in targets(fewer):
            if row["target"] not in named:
                row["measured"] += f" (seeds {fewer['seeds']} only)"
                summary["targets"].append(row)
    return summary


def write_report(
    root: Path,
    runs: list[str],
    chosen: dict[str, float],
    seeds: list[int],
    grid: dict[str, list[float]],
    pareto: tuple[float, list[float]] | None = None,
) -> list[Path]:
    """study.json, study.md and the plots. Runs with every seed asked for make the main
    comparison; runs with fewer seeds (a study stopped early) are compared with the others
    on the seeds they all have, in a section of their own, never pulling the main
    comparison down to fewer seeds. `pareto`: (the base density, the other densities)."""
    arms, base = collect(root, runs, chosen, seeds)
    if not arms:
        raise FileNotFoundError(f"{root}: no finished study runs for {runs}")
    summary = summarise(arms, base, seeds)
    summary["chosen_lr"] = chosen
    if pareto is not None and "solora" in chosen:
        summary["pareto"] = pareto_points(root, chosen["solora"], *pareto, seeds, arms, base)
    summary["selection"] = selection_table(root, seeds[0], grid)
    out = [root / "study.json", root / "study.md"]
    out[0].write_text(json.dumps(summary, indent=1) + "\n")
    from solora_node.sim.study_text import markdown

    out[1].write_text(markdown(summary))
    from solora_node.sim.study_plots import write_study_plots

    out += write_study_plots(summary, root)
    return out


def selection_table(root: Path, seed: int, grid: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Every grid run: method, lr, final validation accuracy (what chose the lr)."""
    from solora_node.sim.study import validation_score

    rows = []
    for method, rates in grid.items():
        for lr in rates:
            res = job_results(root, Job(method, seed, {"lr_by_method": {method: lr}}))
            if res is not None:
                rows.append(
                    {"method": method, "lr": lr, "validation": validation_score(res, method)}
                )
    return rows


def pareto_points(
    root: Path,
    solora_lr: float,
    base_density: float,
    densities: list[float],
    seeds: list[int],
    arms: list[Arm],
    base: dict[int, dict[str, np.ndarray]],
) -> dict[str, Any]:
    """Accuracy against total bytes: SO-LoRA (auto gate) at each density that has results,
    beside the other methods; each point over the seeds it has, with its paired difference
    to hard MoE on those seeds."""
    from solora_node.sim.study import pareto_jobs

    found: dict[float, dict[int, dict[str, Any]]] = {}
    rates: dict[float, float] = {}
    for job in pareto_jobs(solora_lr, base_density, densities, seeds):
        results = job_results(root, job)
        if results is not None:
            found.setdefault(job.overrides["density"], {})[job.seed] = results
            rates[job.overrides["density"]] = job.overrides["lr_by_method"]["solora"]
    if not found:
        return {}
    points = []
    for d, have in found.items():
        point = _arms_of("solora", have, rates[d], "solora")[0]  # the auto gate
        point.label = f"solora d={d:g}"
        points.append(point)
    others = [a for a in arms if "oracle" not in a.label and "@" not in a.run]
    reference = next((a for a in others if a.run == "hard_moe"), None)
    density = {f"solora d={d:g}": d for d in found} | {"solora (auto gate)": base_density}
    rows = []
    for arm in points + others:
        # Each point over its own seeds, with its paired gap to hard MoE on those seeds.
        group = [arm] if reference is None or arm is reference else [arm, reference]
        summary = analyse(group, base)
        row = summary["arms"][arm.label]
        gap = summary["differences"].get(f"{arm.label} - hard_moe")
        rows.append(
            {
                "label": arm.label,
                "density": density.get(arm.label),
                "lr": arm.lr,
                "seeds": summary["seeds"],
                "mean": row["mean"],
                "interval": row["interval"],
                "bytes_mean": row["bytes_mean"],
                "minus_hard_moe": gap,
            }
        )
    return {"points": rows}
