"""The study's figures: accuracy vs round, accuracy vs cumulative bytes, the
accuracy-vs-bytes Pareto of every run, and interference per task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def write_study_plots(summary: dict[str, Any], root: Path) -> list[Path]:
    arms = {k: v for k, v in summary["arms"].items() if "curve" in v}
    written = []
    fig, (by_round, by_bytes) = plt.subplots(1, 2, figsize=(11, 4))
    for label, row in arms.items():
        curve = [(0, summary["arms"]["base model"]["mean"], 0.0), *row["curve"]]
        rounds, accuracy, sent = zip(*curve, strict=True)
        by_round.plot(rounds, [100 * a for a in accuracy], marker="o", label=label)
        by_bytes.plot(
            [max(b, 1.0) for b in sent], [100 * a for a in accuracy], marker="o", label=label
        )
    by_round.set_xlabel("round")
    by_round.set_ylabel("avg accuracy (%)")
    by_bytes.set_xscale("log")
    by_bytes.set_xlabel("cumulative bytes (all devices)")
    by_round.legend(fontsize=7)
    fig.tight_layout()
    written.append(root / "study_curves.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    pareto = summary.get("pareto") or {}
    points = pareto.get("points") or [
        {"label": label, "density": None, **row} for label, row in arms.items()
    ]
    # SO-LoRA's densities as one line, every other run as its own point.
    line = sorted((p for p in points if p["density"] is not None), key=lambda p: p["density"])
    if len(line) > 1:
        ax.plot(
            [p["bytes_mean"] for p in line],
            [100 * p["mean"] for p in line],
            color="grey",
            linewidth=1,
        )
        for p in line:
            ax.annotate(f"d={p['density']:g}", (p["bytes_mean"], 100 * p["mean"]), fontsize=7)
    for p in points:
        low, high = p["interval"]
        mean = p["mean"]
        ax.errorbar(
            [p["bytes_mean"] or 1.0],
            [100 * mean],
            yerr=[[100 * (mean - low)], [100 * (high - mean)]],
            fmt="o",
            capsize=3,
            label=p["label"],
        )
    ax.set_xscale("log")
    ax.set_xlabel("total bytes (all devices, all rounds)")
    ax.set_ylabel("avg accuracy (%), 95% interval")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(root / "study_pareto.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    interference = summary.get("interference") or {}
    if interference:
        tasks = sorted(summary["examples_per_task"])
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / max(1, len(interference))
        for k, (label, per_task) in enumerate(interference.items()):
            xs = [i + k * width for i in range(len(tasks))]
            ax.bar(xs, [100 * per_task[t]["mean"] for t in tasks], width, label=label)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], tasks)
        ax.set_ylabel("accuracy minus the task's own expert (pts)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(root / "study_interference.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
