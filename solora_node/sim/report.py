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
        saving = (
            f"{100 * (1 - r['bytes_total'] / lora_bytes):.1f}% less"
            if lora_bytes and r["method"] != "lora"
            else "-"
        )
        collision = r.get("collision_rate", {}).get("cross_task")
        lines.append(
            f"| {label} | "
            + " | ".join(_pct(per_task[t]) for t in tasks)
            + f" | {_pct(avg)} | {_bytes(r['bytes_total'])} | {saving} | "
            + f"{_pct(r.get('routing_accuracy'))} | {_pct(collision)} |"
        )
    lines.append("")
    lines.append("Accuracy in %, mean over all devices of each device's merged model on each task.")
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


def write_outputs(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.md"]
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    (out / "results.md").write_text(markdown_table(results))
    written += write_plots(results, out)
    return written
