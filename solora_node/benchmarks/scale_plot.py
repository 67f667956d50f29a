"""The PNG of `bench scale`: planning time vs members, and per-node round costs vs N and T."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from solora_node.sim.plots import DPI


def plot_scale(result: dict[str, Any], path: Path) -> None:
    fig, (plan_ax, bytes_ax, memory_ax) = plt.subplots(1, 3, figsize=(13, 4))
    planning = result["planning"]
    members = [p["members"] for p in planning]
    plan_ax.plot(members, [p["plan_s"] for p in planning], marker="o", label="plan")
    plan_ax.plot(members, [p["replan_s"] for p in planning], marker="x", label="re-plan (1 leaves)")
    plan_ax.axhline(0.1, linestyle=":", color="grey", label="100 ms")
    plan_ax.set_xscale("log")
    plan_ax.set_yscale("log")
    plan_ax.set_xlabel(f"members (over {planning[0]['tasks']} tasks)")
    plan_ax.set_ylabel("CPU seconds")
    plan_ax.set_title("topology planning")
    plan_ax.legend(fontsize=7)
    by_tasks: dict[int, list[dict[str, Any]]] = {}
    for row in result["rounds"]:
        by_tasks.setdefault(row["tasks"], []).append(row)
    for tasks, rows in sorted(by_tasks.items()):
        nodes = [r["nodes"] for r in rows]
        bytes_ax.plot(
            nodes, [r["bytes_sent"]["mean"] / 1e3 for r in rows], marker="o", label=f"T={tasks}"
        )
        memory_ax.plot(
            nodes,
            [r["foreign_expert_bytes"]["mean"] / 1e3 for r in rows],
            marker="o",
            label=f"T={tasks}",
        )
    bytes_ax.set_xlabel("nodes N")
    bytes_ax.set_ylabel("kB sent per node per round (mean)")
    bytes_ax.set_title("bytes per node per round")
    bytes_ax.legend(fontsize=7)
    memory_ax.set_xlabel("nodes N")
    memory_ax.set_ylabel("kB of foreign experts held per node")
    memory_ax.set_title("foreign-expert memory")
    memory_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
