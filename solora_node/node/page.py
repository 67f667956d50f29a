"""The node's own web page (`/` on the metrics port): read-only HTML for an operator with
a browser and no Prometheus stack (docs/operations.md, "The node page").

No JavaScript and no external assets: inline CSS and inline SVG only, refreshed by a
meta tag. The daemon records one immutable snapshot per round on its event loop; the
HTTP thread renders whichever snapshot is current (a reference swap, no shared mutation).
Counters by reason are read from the node's Prometheus registry, which is thread-safe.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from prometheus_client import CollectorRegistry

from solora_node.protocol.topology import TopologyView
from solora_node.topology_draw import topology_svg

HISTORY = 240  # rounds kept for the charts
REFRESH_S = 5
CHART_W, CHART_H = 420, 150


@dataclass(frozen=True)
class RoundPoint:
    round: int
    unix: float
    loss: float | None
    bytes_sent: int
    bytes_received: int
    seconds: float


@dataclass(frozen=True)
class PeerRow:
    node_id: str
    task: str
    state: str
    address: str
    role: str  # cluster / bridge neighbour, or "" when not a neighbour now


def peer_rows(
    peers: Mapping[str, tuple[Any, Any]], neighbours: Iterable[Any]
) -> tuple[PeerRow, ...]:
    """Rows from the membership view's peers() (node id -> (PeerInfo, PeerState)) and the
    book's NeighbourStatus tuple (which of them this node exchanges with, and how)."""
    roles = {n.peer.node_id: n.role for n in neighbours}
    return tuple(
        PeerRow(
            node_id=node_id,
            task=peer.task,
            state=str(getattr(state, "value", state)),
            address=f"{peer.host}:{peer.grpc_port}" if peer.host else "",
            role=roles.get(node_id, ""),
        )
        for node_id, (peer, state) in peers.items()
    )


@dataclass(frozen=True)
class PageSnapshot:
    round: int = 0
    history: tuple[RoundPoint, ...] = ()
    peers: tuple[PeerRow, ...] = ()
    topology: TopologyView | None = None
    last_checkpoint_round: int | None = None
    last_checkpoint_unix: float | None = None
    eval_accuracy: str | None = None


@dataclass
class NodePage:
    """Identity fixed at start; `record_round` after every round; `render` from any thread."""

    node_id: str
    task: str
    federation: str
    version: str
    data_dir: str
    checkpoint_policy: str  # e.g. "every 10 rounds or 60 s"
    registry: CollectorRegistry
    started_unix: float = field(default_factory=time.time)
    _history: collections.deque[RoundPoint] = field(
        default_factory=lambda: collections.deque(maxlen=HISTORY)
    )
    _snapshot: PageSnapshot = field(default_factory=PageSnapshot)

    def record_round(
        self,
        round_: int,
        losses: Sequence[float],
        byte_totals: Mapping[tuple[str, str], int],
        seconds: float,
        peers: Iterable[PeerRow],
        topology: TopologyView | None,
        last_checkpoint: tuple[int | None, float | None],
        eval_accuracy: str | None = None,
    ) -> None:
        sent = sum(n for (_, way), n in byte_totals.items() if way == "sent")
        received = sum(n for (_, way), n in byte_totals.items() if way == "received")
        loss = sum(losses) / len(losses) if losses else None
        self._history.append(RoundPoint(round_, time.time(), loss, sent, received, seconds))
        self._snapshot = PageSnapshot(
            round=round_,
            history=tuple(self._history),
            peers=tuple(peers),
            topology=topology,
            last_checkpoint_round=last_checkpoint[0],
            last_checkpoint_unix=last_checkpoint[1],
            eval_accuracy=eval_accuracy,
        )

    def counts_by_reason(self, metric: str) -> dict[str, float]:
        """Non-zero samples of a `reason`-labelled counter, e.g. solora_deltas_refused."""
        counts: dict[str, float] = {}
        for family in self.registry.collect():
            if family.name != metric:
                continue
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value > 0:
                    counts[sample.labels.get("reason", "?")] = sample.value
        return counts

    def render(self) -> str:
        snap = self._snapshot
        now = time.time()
        title = f"solora-node {escape(self.node_id)}"
        sections = [
            _identity(self, snap, now),
            _peers(snap),
            _topology(snap),
            _charts(snap),
            _refusals(self),
            _checkpoint(self, snap, now),
        ]
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="{REFRESH_S}">'
            f"<title>{title}</title><style>{CSS}</style></head><body>"
            f"<h1>{title}</h1>" + "".join(sections) + "<footer>Read-only; refreshes every "
            f'{REFRESH_S} s. Raw figures: <a href="/metrics">/metrics</a>.</footer>'
            "</body></html>\n"
        )


CSS = (
    "body{font-family:sans-serif;margin:1.5em;color:#222;max-width:70em}"
    "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.4em;border-bottom:1px solid #ccc}"
    "table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left;"
    "border-bottom:1px solid #eee}th{background:#f4f4f4}"
    ".live,.self{color:#176f2c}.suspect{color:#a66300}.dead,.unknown{color:#b00020}"
    ".charts{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}"
    "figcaption{font-size:.9em;color:#555}footer{margin-top:2em;font-size:.85em;color:#666}"
)


def _ago(now: float, then: float | None) -> str:
    if then is None:
        return "never"
    return f"{max(0.0, now - then):.0f} s ago"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], table_id: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _identity(page: NodePage, snap: PageSnapshot, now: float) -> str:
    rows = [
        ("node", escape(page.node_id)),
        ("task", escape(page.task)),
        ("federation", escape(page.federation)),
        ("version", escape(page.version)),
        ("round", f'<span id="round">{snap.round}</span>' if snap.history else "no round yet"),
        ("up", f"{now - page.started_unix:.0f} s"),
    ]
    if snap.history:
        last = snap.history[-1]
        rows.append(("last round", f"{_ago(now, last.unix)}, took {last.seconds:.2f} s"))
    if snap.eval_accuracy is not None:
        rows.append(("eval accuracy", escape(snap.eval_accuracy)))
    return "<h2>This node</h2>" + _table(("", ""), rows, "identity")


def _peers(snap: PageSnapshot) -> str:
    if not snap.peers:
        return '<h2>Peers</h2><p id="peers">No peers known yet.</p>'
    rows = [
        (
            escape(p.node_id),
            escape(p.task),
            f'<span class="{escape(p.state)}">{escape(p.state)}</span>',
            escape(p.role or "-"),
            escape(p.address),
        )
        for p in snap.peers
    ]
    return "<h2>Peers</h2>" + _table(
        ("peer", "task", "liveness", "neighbour", "address"), rows, "peers"
    )


def _topology(snap: PageSnapshot) -> str:
    view = snap.topology
    if view is None:
        return "<h2>Topology</h2><p>No plan yet (the node plans at its first round).</p>"
    rows = [
        (
            escape(c.task),
            str(len(c.members)),
            escape(c.head),
            str(c.degree),
            f"{c.spectral_gap:.4f}",
            escape(" ".join(c.members)),
        )
        for c in view.clusters
    ]
    bridges = ", ".join(f"{escape(b.a)}&ndash;{escape(b.b)}" for b in view.bridges) or "none"
    return (
        "<h2>Topology</h2><figure>"
        + topology_svg(view)
        + "<figcaption>Solid: cluster edges (gossip averaging); dashed: bridges (foreign "
        "experts relayed); thick ring: cluster head; hollow: not live.</figcaption></figure>"
        + _table(("cluster", "size", "head", "degree", "spectral gap", "members"), rows, "clusters")
        + f"<p>Bridges: {bridges}</p>"
    )


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]], chart_id: str, y_label: str
) -> str:
    """An inline SVG line chart of one or more (x, y) series, with min/max axis labels."""
    colours = ("#1f77b4", "#d62728", "#2ca02c")
    points = [p for values in series.values() for p in values]
    if len(points) < 2:
        return f'<p id="{chart_id}">Not enough rounds yet for a chart of {escape(y_label)}.</p>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad_l, pad_b, pad_t = 60, 20, 10
    w, h = CHART_W - pad_l - 10, CHART_H - pad_b - pad_t

    def at(x: float, y: float) -> str:
        fx = (x - x0) / (x1 - x0) if x1 > x0 else 0.5
        fy = (y - y0) / (y1 - y0) if y1 > y0 else 0.5
        return f"{pad_l + fx * w:.1f},{pad_t + (1 - fy) * h:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{chart_id}" width="{CHART_W}" '
        f'height="{CHART_H}" role="img" aria-label="{escape(y_label)}">',
        f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 10}" font-size="10" text-anchor="end">{y1:.4g}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + h}" font-size="10" text-anchor="end">{y0:.4g}</text>',
        f'<text x="{pad_l}" y="{CHART_H - 4}" font-size="10">{x0:.0f}</text>',
        f'<text x="{pad_l + w}" y="{CHART_H - 4}" font-size="10" text-anchor="end">{x1:.0f}</text>',
    ]
    for k, (name, values) in enumerate(series.items()):
        colour = colours[k % len(colours)]
        path = " ".join(at(x, y) for x, y in values)
        parts.append(
            f'<polyline class="series" data-series="{escape(name)}" points="{path}" '
            f'fill="none" stroke="{colour}" stroke-width="1.5"/>'
        )
        parts.append(
            f'<text x="{pad_l + 6}" y="{pad_t + 12 + 12 * k}" font-size="10" '
            f'fill="{colour}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _charts(snap: PageSnapshot) -> str:
    history = snap.history
    loss = [(p.round, p.loss) for p in history if p.loss is not None]
    sent = [(p.round, p.bytes_sent / 1e6) for p in history]
    received = [(p.round, p.bytes_received / 1e6) for p in history]
    seconds = [(p.round, p.seconds) for p in history]
    charts = [
        ("loss", "train loss per round", {"train loss": loss}),
        ("bytes", "MB sent and received since start", {"sent": sent, "received": received}),
        ("duration", "round duration (s)", {"seconds": seconds}),
    ]
    figures = "".join(
        f"<figure>{line_chart(series, f'chart-{key}', caption)}"
        f"<figcaption>{escape(caption)} over rounds</figcaption></figure>"
        for key, caption, series in charts
    )
    return f'<h2>Rounds</h2><div class="charts">{figures}</div>'


def _refusals(page: NodePage) -> str:
    refused = page.counts_by_reason("solora_deltas_refused")
    failed = page.counts_by_reason("solora_exchange_failures")
    reasons = sorted(set(refused) | set(failed))
    if not reasons:
        return '<h2>Refusals</h2><p id="refusals">No refused deltas or failed exchanges.</p>'
    rows = [(escape(r), f"{refused.get(r, 0):.0f}", f"{failed.get(r, 0):.0f}") for r in reasons]
    return "<h2>Refusals</h2>" + _table(
        ("reason", "deltas refused", "exchanges failed"), rows, "refusals"
    )


def _checkpoint(page: NodePage, snap: PageSnapshot, now: float) -> str:
    last = snap.last_checkpoint_round
    rows = [
        ("last checkpoint", "none yet" if last is None else f"round {last}"),
        ("written", _ago(now, snap.last_checkpoint_unix)),
        ("policy", escape(page.checkpoint_policy) + "; always at a graceful stop"),
        ("folder", escape(page.data_dir)),
    ]
    return "<h2>Checkpoint</h2>" + _table(("", ""), rows, "checkpoint")
