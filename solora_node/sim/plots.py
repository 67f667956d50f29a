"""PNG plots (matplotlib, Agg): accuracy vs bytes, per-task bars, topology, gap vs consensus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

from solora_node.topology_draw import circle_of_circles

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

DPI = 80  # small PNGs: they are committed under docs/img


def _curve(run: dict[str, Any], key: str = "avg_accuracy") -> tuple[list[float], list[float]]:
    points = [(r["bytes_cumulative"], r[key]) for r in run["rounds"] if key in r]
    return [p[0] for p in points], [p[1] for p in points]


def accuracy_vs_bytes(results: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, run in results["methods"].items():
        x, y = _curve(run)
        if run["bytes_total"] == 0:  # no communication: a level, not a curve
            ax.axhline(y[-1], linestyle=":", color="grey", label=f"{name} (0 bytes)")
            continue
        ax.plot(x, y, marker="o", label=name + (" (auto)" if "per_task_oracle" in run else ""))
        if "per_task_oracle" in run:
            xo, yo = _curve(run, "avg_accuracy_oracle")
            ax.plot(xo, yo, marker="x", linestyle="--", label=f"{name} (oracle)")
    ax.set_xscale("log")
    ax.set_xlabel("cumulative bytes sent (all devices)")
    ax.set_ylabel("average accuracy")
    ax.set_title("accuracy vs communication")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def per_task_bars(results: dict[str, Any], path: Path) -> None:
    tasks = list(results["config"]["tasks"])
    series: list[tuple[str, dict[str, float]]] = [("base", results["base_accuracy"]["per_task"])]
    for name, run in results["methods"].items():
        series.append((name + (" (auto)" if "per_task_oracle" in run else ""), run["per_task"]))
        if "per_task_oracle" in run:
            series.append((f"{name} (oracle)", run["per_task_oracle"]))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(tasks))
    for k, (label, per_task) in enumerate(series):
        ax.bar(x + k * width, [per_task[t] for t in tasks], width, label=label)
    ax.set_xticks(x + 0.4 - width / 2, tasks)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("final per-task accuracy (mean over devices)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _layout(graph: dict[str, Any]) -> np.ndarray:
    if graph.get("positions") is not None:
        return np.asarray(graph["positions"])
    # Clusters on a circle of circles, so cluster structure is visible (the node page's layout).
    return np.asarray(circle_of_circles([node["task"] for node in graph["nodes"]]))


def topology_plot(graph: dict[str, Any], path: Path, title: str) -> None:
    pos = _layout(graph)
    tasks = list(dict.fromkeys(n["task"] for n in graph["nodes"]))
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for i, j in graph["edges"]:
        same = graph["nodes"][i]["task"] == graph["nodes"][j]["task"]
        ax.plot(
            *zip(pos[i], pos[j], strict=True),
            color="black" if same else "grey",
            linestyle="-" if same else "--",
            linewidth=1.2 if same else 0.8,
            zorder=1,
        )
    for t, task in enumerate(tasks):
        idx = [k for k, n in enumerate(graph["nodes"]) if n["task"] == task]
        ax.scatter(pos[idx, 0], pos[idx, 1], s=220, color=colours(t), label=task, zorder=2)
    for k, node in enumerate(graph["nodes"]):
        ax.annotate(node["id"][-2:], pos[k], ha="center", va="center", fontsize=7, zorder=3)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def gap_vs_consensus(results: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    markers = {"cluster": "o", "random": "s", "ring": "^", "complete": "D"}
    for kind, run in results["ablation"].items():
        accuracy = run.get("per_task_oracle", run["per_task"])
        for task, stats in run["cluster_stats"].items():
            if stats["size"] < 2:
                continue
            marker = markers.get(kind, "o")
            axes[0].scatter(stats["spectral_gap"], run["consensus_final"][task], marker=marker)
            axes[0].annotate(
                f"{kind}:{task[:4]}",
                (stats["spectral_gap"], run["consensus_final"][task]),
                fontsize=6,
            )
            axes[1].scatter(stats["spectral_gap"], accuracy[task], marker=marker)
            axes[1].annotate(
                f"{kind}:{task[:4]}", (stats["spectral_gap"], accuracy[task]), fontsize=6
            )
    axes[0].set_xlabel("cluster spectral gap")
    axes[0].set_ylabel("final consensus distance")
    axes[0].set_yscale("symlog", linthresh=1e-6)
    axes[1].set_xlabel("cluster spectral gap")
    axes[1].set_ylabel("own-task accuracy (oracle)")
    fig.suptitle("SO-LoRA: cluster spectral gap vs consensus and accuracy", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def write_plots(results: dict[str, Any], out: Path) -> list[Path]:
    paths = [out / "accuracy_vs_bytes.png", out / "per_task_accuracy.png", out / "topology.png"]
    accuracy_vs_bytes(results, paths[0])
    per_task_bars(results, paths[1])
    topo = results["topology"]
    topology_plot(topo, paths[2], f"{topo['kind']} topology (colour = task cluster)")
    for kind, run in results.get("ablation", {}).items():
        if kind != topo["kind"]:
            path = out / f"topology_{kind}.png"
            topology_plot(run["graph"], path, f"{kind} topology (colour = task cluster)")
            paths.append(path)
    if results.get("ablation"):
        paths.append(out / "gap_vs_consensus.png")
        gap_vs_consensus(results, paths[-1])
    return paths
