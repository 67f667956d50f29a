"""results.json, the markdown table and the plots of an experiment, written to --out DIR."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from solora_node.sim.plots import write_plots


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def markdown_table(results: dict[str, Any]) -> str:
    """Main table: accuracy per task, average, bytes, savings vs LoRA; then the ablation."""
    tasks = list(results["config"]["tasks"])
    methods = results["methods"]
    lora_bytes = methods.get("lora", {}).get("bytes_total")
    head = ["method", *tasks, "avg", "bytes total", "vs LoRA bytes", "routing", "collision x-task"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = results["base_accuracy"]
    lines.append(
        "| base model (no adapter) | "
        + " | ".join(_pct(base["per_task"][t]) for t in tasks)
        + f" | {_pct(base['avg_accuracy'])} | 0 | - | - | - |"
    )
    rows: list[tuple[str, dict[str, Any], str]] = []
    for name, r in methods.items():
        if "per_task_oracle" in r:
            rows.append((f"{name} (auto gate)", r, "per_task"))
            rows.append((f"{name} (oracle gate)", r, "per_task_oracle"))
        else:
            rows.append((name, r, "per_task"))
    for label, r, key in rows:
        per_task = r[key]
        avg = sum(per_task.values()) / len(per_task)
        saving = "-"
        if lora_bytes and r["method"] != "lora":
            ratio = 1 - r["bytes_total"] / lora_bytes
            saving = f"{100 * ratio:.1f}% less" if ratio >= 0 else f"{-100 * ratio:.1f}% more"
        collision = r.get("collision_rate", {}).get("cross_task")
        lines.append(
            f"| {label} | "
            + " | ".join(_pct(per_task[t]) for t in tasks)
            + f" | {_pct(avg)} | {_bytes(r['bytes_total'])} | {saving} | "
            + f"{_pct(r.get('routing_accuracy'))} | {_pct(collision)} |"
        )
    lines.append("")
    lines.append("Accuracy in %, mean over all devices of each device's merged model on each task.")
    found = targets(results)
    if found:
        lines += ["", targets_table(found)]
    if results.get("ablation"):
        lines += ["", ablation_table(results)]
    return "\n".join(lines) + "\n"


def ablation_table(results: dict[str, Any]) -> str:
    """SO-LoRA per topology: per cluster spectral gap, final consensus distance, accuracy."""
    lines = [
        "| topology | task | cluster size | same-task edges | spectral gap | consensus distance "
        "| accuracy (oracle) | bytes total |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, run in results["ablation"].items():
        for task, stats in run["cluster_stats"].items():
            acc = run.get("per_task_oracle", run["per_task"])[task]
            lines.append(
                f"| {kind} | {task} | {stats['size']:.0f} | {stats['edges']:.0f} | "
                f"{stats['spectral_gap']:.3f} | {run['consensus_final'][task]:.3g} | "
                f"{_pct(acc)} | {_bytes(run['bytes_total'])} |"
            )
    return "\n".join(lines)


# A target whose baseline was not part of the run (e.g. a SO-LoRA-only config).
NOT_RUN = "not run"


def _first_reaching(run: dict[str, Any], target: float, key: str) -> int | None:
    """Cumulative bytes at the first evaluated round whose `key` accuracy >= target."""
    for entry in run["rounds"]:
        if key in entry and entry[key] >= target - 1e-12:
            return int(entry["bytes_cumulative"])
    return None


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's four comparisons of SO-LoRA (main topology) with the baselines.

    - bytes to reach LoRA's final average accuracy: each method's cumulative bytes at its
      first evaluated round at or above that accuracy (None: never reached);
    - average accuracy gain over LoRA after the same rounds;
    - gap to hard-routing MoE (oracle label) and margin over LoRI.
    SO-LoRA's headline is its `auto` gate (what a deployed node serves); the oracle gate
    is given beside it.
    """
    methods = results["methods"]
    ours = methods.get("solora")
    if ours is None:
        return {}
    out: dict[str, Any] = {}
    for gate, key in (("auto", "avg_accuracy"), ("oracle", "avg_accuracy_oracle")):
        if key not in ours:
            continue
        row: dict[str, Any] = {"solora_accuracy": ours[key]}
        lora = methods.get("lora")
        if lora is not None:
            goal = lora["avg_accuracy"]
            lora_bytes = _first_reaching(lora, goal, "avg_accuracy")
            ours_bytes = _first_reaching(ours, goal, key)
            row["lora_accuracy"] = goal
            row["gain_over_lora"] = ours[key] - goal
            row["lora_bytes_to_reach"] = lora_bytes
            row["solora_bytes_to_reach"] = ours_bytes
            row["bytes_reduction_to_reach"] = (
                1 - ours_bytes / lora_bytes if ours_bytes is not None and lora_bytes else None
            )
            row["bytes_reduction_total"] = (
                1 - ours["bytes_total"] / lora["bytes_total"] if lora["bytes_total"] else None
            )
        else:
            for name in ("gain_over_lora", "bytes_reduction_to_reach", "bytes_reduction_total"):
                row[name] = NOT_RUN
        if "hard_moe" in methods:
            row["gap_to_hard_moe"] = methods["hard_moe"]["avg_accuracy"] - ours[key]
        else:
            row["gap_to_hard_moe"] = NOT_RUN
        if "lori" in methods:
            row["margin_over_lori"] = ours[key] - methods["lori"]["avg_accuracy"]
        else:
            row["margin_over_lori"] = NOT_RUN
        out[gate] = row
    return out


def _signed(x: float) -> str:
    return f"{100 * x:+.1f} pts"


def targets_table(found: dict[str, Any]) -> str:
    """The targets as a markdown table, with the issue's thresholds beside the figures."""
    lines = [
        "| target | threshold | SO-LoRA auto gate | SO-LoRA oracle gate |",
        "|---|---|---|---|",
    ]

    def cell(gate: str, name: str, fmt: str) -> str:
        value = found.get(gate, {}).get(name)
        if isinstance(value, str):
            return value
        if value is None:
            return "not reached" if name == "bytes_reduction_to_reach" and gate in found else "-"
        if fmt == "pct":
            return f"{100 * value:.1f}%"
        return _signed(value)

    rows = (
        (
            "fewer bytes to reach LoRA's final accuracy",
            ">= 90%",
            "bytes_reduction_to_reach",
            "pct",
        ),
        ("fewer bytes in total, same rounds", "-", "bytes_reduction_total", "pct"),
        ("average accuracy minus LoRA's", ">= +5 pts", "gain_over_lora", "pts"),
        ("hard-routing MoE minus SO-LoRA", "<= 1 pt", "gap_to_hard_moe", "pts"),
        ("SO-LoRA minus LoRI", "> 0", "margin_over_lori", "pts"),
    )
    for label, threshold, name, fmt in rows:
        lines.append(
            f"| {label} | {threshold} | {cell('auto', name, fmt)} | {cell('oracle', name, fmt)} |"
        )
    return "\n".join(lines)


def write_outputs(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.md"]
    results = {**results, "targets": targets(results)}
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    (out / "results.md").write_text(markdown_table(results))
    written += write_plots(results, out)
    return written
