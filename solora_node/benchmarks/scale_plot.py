"""The PNG of `bench scale`: planning time vs members, per-node round costs vs N, and
bytes and foreign-expert memory vs T with and without the cap on held foreign experts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from solora_node.sim.plots import DPI


def _plot_planning(ax: Axes, planning: list[dict[str, Any]]) -> None:
    members = [p["members"] for p in planning]
    ax.plot(members, [p["plan_s"] for p in planning], marker="o", label="plan")
    ax.plot(members, [p["replan_s"] for p in planning], marker="x", label="re-plan (1 leaves)")
    ax.axhline(0.1, linestyle=":", color="grey", label="100 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"members (over {planning[0]['tasks']} tasks)")
    ax.set_ylabel("CPU seconds")
    ax.set_title("topology planning")
    ax.legend(fontsize=7)


def _plot_bytes_vs_nodes(ax: Axes, rows: list[dict[str, Any]]) -> None:
    by_tasks: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_tasks.setdefault(row["tasks"], []).append(row)
    for tasks, group in sorted(by_tasks.items()):
        nodes = [r["nodes"] for r in group]
        ax.plot(
            nodes, [r["bytes_sent"]["mean"] / 1e3 for r in group], marker="o", label=f"T={tasks}"
        )
    ax.set_xlabel("nodes N")
    ax.set_ylabel("kB sent per node per round (mean)")
    ax.set_title("bytes per node per round (no cap)")
    ax.legend(fontsize=7)


def _versus_tasks(result: dict[str, Any]) -> tuple[int, list[tuple[str, list[dict[str, Any]]]]]:
    """The largest N of the capped sweep, and its rows per T without and with the cap."""
    capped = result.get("capped_rounds") or []
    nodes = max(r["nodes"] for r in capped)
    uncapped = [r for r in result["rounds"] if r["nodes"] == nodes]
    cap = [r for r in capped if r["nodes"] == nodes]
    return nodes, [("no cap", uncapped), (f"cap {result['max_foreign_experts']}", cap)]


def _plot_versus_tasks(bytes_ax: Axes, memory_ax: Axes, result: dict[str, Any]) -> None:
    nodes, series = _versus_tasks(result)
    for label, rows in series:
        rows = sorted(rows, key=lambda r: r["tasks"])
        tasks = [r["tasks"] for r in rows]
        (line,) = bytes_ax.plot(
            tasks, [r["bytes_sent"]["mean"] / 1e3 for r in rows], marker="o", label=f"{label}, mean"
        )
        bytes_ax.plot(
            tasks,
            [r["bytes_sent"]["max"] / 1e3 for r in rows],
            marker="x",
            linestyle="--",
            color=line.get_color(),
            label=f"{label}, busiest node",
        )
        memory_ax.plot(
            tasks, [r["foreign_expert_bytes"]["mean"] / 1e3 for r in rows], marker="o", label=label
        )
    bytes_ax.set_xlabel("tasks T")
    bytes_ax.set_ylabel("kB sent per node per round")
    bytes_ax.set_title(f"bytes per node per round, N={nodes}")
    bytes_ax.legend(fontsize=7)
    memory_ax.set_xlabel("tasks T")
    memory_ax.set_ylabel("kB of foreign experts held per node (mean)")
    memory_ax.set_title(f"foreign-expert memory, N={nodes}")
    memory_ax.legend(fontsize=7)


def plot_scale(result: dict[str, Any], path: Path) -> None:
    panels = (1 if result["planning"] else 0) + 1 + (2 if result.get("capped_rounds") else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.3 * panels, 4), squeeze=False)
    row = list(axes[0])
    if result["planning"]:
        _plot_planning(row.pop(0), result["planning"])
    _plot_bytes_vs_nodes(row.pop(0), result["rounds"])
    if result.get("capped_rounds"):
        _plot_versus_tasks(row[0], row[1], result)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
