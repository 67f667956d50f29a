"""Drawing a topology: one layout, rendered as inline SVG (the node page) or PNG (the CLI).

Clusters sit on a circle of circles, so the cluster structure is visible at a glance;
cluster edges are solid, bridges dashed, heads ringed, and a peer that is not live is
drawn hollow with its state written under it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from pathlib import Path

from solora_node.protocol.topology import TopologyView

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
DRAWN_LIVE = ("self", "live", "planned")  # filled; any other state is drawn hollow
CLUSTER_RADIUS = 0.35  # members around their cluster's centre, in units of the big circle


def circle_of_circles(tasks_of_nodes: Sequence[str]) -> list[tuple[float, float]]:
    """A position in [-1.35, 1.35]^2 per node, given each node's task (in node order)."""
    tasks = list(dict.fromkeys(tasks_of_nodes))
    points = []
    for n, task in enumerate(tasks_of_nodes):
        t = tasks.index(task)
        same = [k for k, other in enumerate(tasks_of_nodes) if other == task]
        k = same.index(n)
        cx, cy = (
            (0.0, 0.0)
            if len(tasks) == 1
            else (
                math.cos(2 * math.pi * t / len(tasks)),
                math.sin(2 * math.pi * t / len(tasks)),
            )
        )
        # A quarter turn: two-member clusters stand across the line between clusters, so a
        # bridge never runs through the other member.
        angle = 2 * math.pi * k / len(same) + math.pi / 2
        radius = CLUSTER_RADIUS if len(same) > 1 else 0.0
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _nodes(view: TopologyView) -> list[tuple[str, str]]:
    """(node id, task) of every member to draw, grouped by task in federation order."""
    order = {task: k for k, task in enumerate(view.tasks)}
    members = [(m.node_id, m.task) for m in view.members]
    return sorted(members, key=lambda m: (order.get(m[1], len(order)), m[1], m[0]))


def _links(view: TopologyView) -> list[tuple[str, str, bool]]:
    """(a, b, is_bridge) for every planned link."""
    links = [(e.a, e.b, False) for c in view.clusters for e in c.edges]
    return links + [(b.a, b.b, True) for b in view.bridges]


def topology_svg(view: TopologyView, size: int = 420) -> str:
    """A self-contained <svg> element (no scripts, no external references)."""
    nodes = _nodes(view)
    points = circle_of_circles([task for _, task in nodes])
    # Fit the drawing's bounding box (two clusters lie on one line: no empty square).
    margin = 40.0
    xs, ys = [x for x, _ in points] or [0.0], [y for _, y in points] or [0.0]
    span = max(max(xs) - min(xs), max(ys) - min(ys), 0.5)
    scale = (size - 2 * margin) / span
    width, height = size, int((max(ys) - min(ys)) * scale + 2 * margin)
    x_off = (size - (max(xs) - min(xs)) * scale) / 2
    where = {
        nid: (x_off + (x - min(xs)) * scale, margin + (y - min(ys)) * scale)
        for (nid, _), (x, y) in zip(nodes, points, strict=True)
    }
    colour = {task: PALETTE[k % len(PALETTE)] for k, task in enumerate(view.tasks)}
    heads = {c.head for c in view.clusters}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="topology" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="topology: clusters, heads and bridges">'
    ]
    for a, b, bridge in _links(view):
        if a in where and b in where:
            (x1, y1), (x2, y2) = where[a], where[b]
            style = 'stroke="#888" stroke-dasharray="5 4"' if bridge else 'stroke="#222"'
            kind = "bridge" if bridge else "edge"
            parts.append(
                f'<line class="{kind}" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                f'{style} stroke-width="1.5"/>'
            )
    for node_id, task in nodes:
        x, y = where[node_id]
        state = view.state_of(node_id)
        fill = colour.get(task, "#999") if state in DRAWN_LIVE else "white"
        ring = ' stroke="#000" stroke-width="3"' if node_id in heads else ' stroke="#555"'
        label = escape(node_id)
        parts.append(
            f'<g class="node" data-node="{label}" data-state="{escape(state)}">'
            f"<title>{label} ({escape(task)}, {escape(state)})</title>"
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="14" fill="{fill}"{ring}/>'
            f'<text x="{x:.1f}" y="{y + 28:.1f}" font-size="11" text-anchor="middle">{label}'
            f"{'' if state in DRAWN_LIVE else ' (' + escape(state) + ')'}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def topology_png(view: TopologyView, path: Path, title: str) -> None:
    """The same drawing as a PNG file (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = _nodes(view)
    points = circle_of_circles([task for _, task in nodes])
    where = dict(zip([nid for nid, _ in nodes], points, strict=True))
    colour = {task: PALETTE[k % len(PALETTE)] for k, task in enumerate(view.tasks)}
    heads = {c.head for c in view.clusters}
    fig, ax = plt.subplots(figsize=(5, 5))
    for a, b, bridge in _links(view):
        if a in where and b in where:
            line_x, line_y = zip(where[a], where[b], strict=True)
            ax.plot(
                line_x,
                line_y,
                color="grey" if bridge else "black",
                linestyle="--" if bridge else "-",
            )
    for task in dict.fromkeys(t for _, t in nodes):
        for node_id in (n for n, t in nodes if t == task):
            state = view.state_of(node_id)
            live = state in DRAWN_LIVE
            x, y = where[node_id]
            ax.scatter(
                [x],
                [y],
                s=320,
                facecolors=colour.get(task, "#999") if live else "white",
                edgecolors="black",
                linewidths=3 if node_id in heads else 1,
                zorder=2,
            )
            suffix = "" if live else f" ({state})"
            ax.annotate(node_id + suffix, (x, y - 0.2), ha="center", fontsize=7, zorder=3)
    for task in view.tasks:
        ax.scatter([], [], color=colour[task], label=task)
    # Equal axes with room for labels: two clusters lie on one line, which autoscaling
    # would stretch into a diagonal and whose labels it would clip.
    xs, ys = [x for x, _ in points] or [0.0], [y for _, y in points] or [0.0]
    ax.set_xlim(min(xs) - 0.4, max(xs) + 0.4)
    ax.set_ylim(min(ys) - 0.4, max(ys) + 0.4)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
