"""The node page and the live topology view, without processes: rendering, escaping,
the proto round trip and the drawing."""

from __future__ import annotations

from pathlib import Path

import pytest

from solora_node.federation.topology import Member, plan_topology
from solora_node.metrics import NodeMetrics
from solora_node.net.membership import PeerInfo, PeerState
from solora_node.node.page import NodePage, peer_rows
from solora_node.node_http import node_http_app
from solora_node.protocol.topology import (
    TopologyView,
    view_from_plan,
    view_from_proto,
    view_to_proto,
)
from solora_node.topology_draw import topology_png, topology_svg


def sample_view() -> TopologyView:
    members = [Member("a1", "arithmetic"), Member("a2", "arithmetic"), Member("r1", "reverse")]
    plan = plan_topology(members, ["arithmetic", "reverse"], max_degree=3)
    known = {"a1": ("arithmetic", "self"), "a2": ("arithmetic", "live"), "r1": ("reverse", "dead")}
    return view_from_plan(plan, known, 1234.5)


def test_view_carries_weights_liveness_and_survives_the_wire() -> None:
    view = sample_view()
    (arith, reverse) = view.clusters
    assert arith.members == ("a1", "a2") and arith.edges[0].weight == pytest.approx(0.5)
    assert arith.self_weights == pytest.approx((0.5, 0.5))
    assert reverse.self_weights == (1.0,)
    assert view.state_of("r1") == "dead" and view.state_of("zz") == "unknown"
    assert view_from_proto(view_to_proto(view)) == view
    as_json = view.to_json()
    assert as_json["clusters"][0]["self_weights"] == {"a1": 0.5, "a2": 0.5}
    assert as_json["members"][2] == {"id": "r1", "task": "reverse", "state": "dead"}


def page_for(metrics: NodeMetrics) -> NodePage:
    return NodePage(
        node_id="a1<x>",
        task="arithmetic",
        federation="fed",
        version="0",
        data_dir="/var/lib/solora-node",
        checkpoint_policy="every 10 rounds or every 60 s",
        registry=metrics.registry,
    )


def test_page_before_and_after_rounds() -> None:
    metrics = NodeMetrics(tasks=["arithmetic"])
    page = page_for(metrics)
    empty = page.render()
    assert "no round yet" in empty and "No plan yet" in empty and "<script" not in empty
    assert "a1&lt;x&gt;" in empty and "a1<x>" not in empty  # ids are escaped
    metrics.delta_refused("stale_round")
    metrics.exchange_failed("timeout")
    peers = {
        "a2": (
            PeerInfo("a2", "fed", "arithmetic", "127.0.0.1", 7071, 0, 1, "f", "mdns"),
            PeerState.LIVE,
        )
    }
    for round_ in (1, 2, 3):
        page.record_round(
            round_,
            [2.0 / round_],
            {("delta", "sent"): 1000 * round_, ("delta", "received"): 900 * round_},
            0.5,
            peer_rows(peers, []),
            sample_view(),
            (round_, None),
        )
    html = page.render()
    assert '<span id="round">3</span>' in html
    assert html.count('class="series"') == 4  # loss, sent, received, duration
    assert "<td>stale_round</td><td>1</td><td>0</td>" in html
    assert "<td>timeout</td><td>0</td><td>1</td>" in html
    assert "127.0.0.1:7071" in html and "round 3" in html
    assert 'data-state="dead"' in html and "r1 (dead)" in html


def test_http_routes_keep_metrics_and_add_health_and_page() -> None:
    metrics = NodeMetrics()
    app = node_http_app(metrics.registry, page_for(metrics).render)
    seen: list[str] = []

    def call(path: str, method: str = "GET") -> bytes:
        environ = {"PATH_INFO": path, "REQUEST_METHOD": method, "QUERY_STRING": ""}
        return b"".join(app(environ, lambda status, headers: seen.append(status)))

    assert b"solora_rounds_total" in call("/metrics") and seen[-1].startswith("200")
    assert call("/healthz") == b"ok\n"
    assert b"<!DOCTYPE html>" in call("/")
    call("/elsewhere")
    assert seen[-1].startswith("404")
    call("/", "POST")
    assert seen[-1].startswith("405")


def test_drawings(tmp_path: Path) -> None:
    svg = topology_svg(sample_view())
    assert svg.count('class="edge"') == 1 and svg.count('class="bridge"') == 1
    assert svg.count('class="node"') == 3 and "<script" not in svg
    png = tmp_path / "t.png"
    topology_png(sample_view(), png, "test")
    assert png.read_bytes()[:4] == b"\x89PNG"
