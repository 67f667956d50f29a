"""What an operator sees of running nodes: the web page on the metrics port (checked in a
real headless Chromium), the live topology from `topology --addr`, start-up phase logs and
round pacing. Three tiny-model nodes on loopback, TLS on, default pacing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from solora_node.metrics import parse_exposition
from solora_node.testbed.local import LocalFederation, NodeSpec
from tests.integration.federation import TINY_BASE, metric, wait_until

pytestmark = pytest.mark.slow
MIN_INTERVAL_S = 2.0  # the operator default (config.RoundsSection)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("page")
    # A federation id of its own: other tests' nodes on this host's loopback mDNS must not
    # join this plan.
    federation = {**TINY_BASE["federation"], "id": f"page-{os.getpid()}"}
    base = {**TINY_BASE, "federation": federation, "rounds": {"min_interval_s": MIN_INTERVAL_S}}
    specs = [
        NodeSpec("a1", "arithmetic", 0, 2),
        NodeSpec("a2", "arithmetic", 1, 2),
        NodeSpec("r1", "reverse"),
    ]
    with LocalFederation(root, specs, base, tls=True) as fed:
        fed.start()
        fed.wait_ready()
        fed.started = time.monotonic()  # type: ignore[attr-defined]

        def settled() -> bool:
            return metric(fed, "a1", "solora_round{}") >= 4 and (
                metric(fed, "a1", "solora_peers{state=live}") == 2
            )

        wait_until(settled, 120, "a1 at round 4 with both peers live")
        yield fed
        fed.stop()


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "solora_node", *args], capture_output=True, text=True, timeout=120
    )


def test_metrics_health_and_page_share_the_port(federation: LocalFederation) -> None:
    port = federation.nodes["a1"].metrics_port
    status, kind, body = get(port, "/metrics")
    assert status == 200 and parse_exposition(body)["solora_round{}"] >= 4
    assert get(port, "/healthz")[::2] == (200, "ok\n")
    status, kind, page = get(port, "/")
    assert status == 200 and kind.startswith("text/html")
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert get(port, "/nothing")[0] == 404


def test_live_topology_from_a_running_node(federation: LocalFederation, tmp_path: Path) -> None:
    a1 = federation.nodes["a1"]
    answers: list[dict[str, Any]] = []

    def all_live() -> bool:
        # Under load a health check can miss its deadline and a peer reads suspect for a
        # moment; the plan is asked again until every peer is live (or the deadline).
        done = cli("topology", "--addr", a1.address, "--config", str(a1.config_path), "--json")
        assert done.returncode == 0, done.stderr
        answers.append(json.loads(done.stdout))
        return all(m["state"] in ("self", "live") for m in answers[-1]["members"])

    wait_until(all_live, 90, "a1's live plan with every peer live")
    plan = answers[-1]
    clusters = {c["task"]: c for c in plan["clusters"]}
    assert clusters["arithmetic"]["members"] == ["a1", "a2"]
    assert clusters["arithmetic"]["edge_weights"] == [pytest.approx(0.5)]  # Metropolis, K2
    assert clusters["arithmetic"]["spectral_gap"] == pytest.approx(1.0)
    assert clusters["reverse"]["members"] == ["r1"]
    assert len(plan["bridges"]) == 1
    states = {m["id"]: m["state"] for m in plan["members"]}
    assert states == {"a1": "self", "a2": "live", "r1": "live"}

    text = cli("topology", "--addr", a1.address, "--config", str(a1.config_path))
    assert text.returncode == 0 and "members: a1 self, a2 " in text.stdout
    assert "weights arithmetic: " in text.stdout and "bridges (1)" in text.stdout
    png = tmp_path / "live.png"
    drawn = cli(
        "topology", "--addr", a1.address, "--config", str(a1.config_path), "--png", str(png)
    )
    assert drawn.returncode == 0, drawn.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    unauthenticated = cli("topology", "--addr", a1.address)
    assert unauthenticated.returncode == 2
    assert len(unauthenticated.stderr.strip().splitlines()) == 1


def test_start_up_phases_are_logged_with_their_times(federation: LocalFederation) -> None:
    log = federation.tail("a1", 400)
    for phase in ("loading model tiny took", "preparing adapter and task arithmetic took"):
        assert f"start-up: {phase}" in log, log
    assert "start-up: serving after" in log


def test_rounds_are_paced_by_the_minimum_interval(federation: LocalFederation) -> None:
    # Without pacing a tiny node does several rounds a second (docs/operations.md).
    elapsed = time.monotonic() - federation.started  # type: ignore[attr-defined]
    rounds = metric(federation, "a1", "solora_rounds_total{}")
    assert rounds <= elapsed / MIN_INTERVAL_S + 2, (rounds, elapsed)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium not installed (.ci/run installs Debian's chromium as root)")


def test_the_page_renders_in_headless_chromium(federation: LocalFederation, tmp_path: Path) -> None:
    browser = _chromium()
    url = f"http://127.0.0.1:{federation.nodes['a1'].metrics_port}/"
    with tempfile.TemporaryDirectory(prefix="solora-chromium-") as profile:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run(
            [browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
        )
        shot = tmp_path / "page.png"
        subprocess.run(
            [browser, *flags, f"--screenshot={shot}", "--window-size=1200,1800", url],
            capture_output=True,
            timeout=120,
        )
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<h1>solora-node a1</h1>" in html
    assert '<svg xmlns="http://www.w3.org/2000/svg" id="topology"' in html
    for node_id in ("a1", "a2", "r1"):
        assert f'data-node="{node_id}"' in html
    assert html.count('class="edge"') == 1 and html.count('class="bridge"') == 1
    assert 'id="peers"' in html and '<span class="live">live</span>' in html
    for chart in ("chart-loss", "chart-bytes", "chart-duration"):
        assert f'<svg xmlns="http://www.w3.org/2000/svg" id="{chart}"' in html, chart
    assert 'id="refusals"' in html and 'id="checkpoint"' in html
    assert "every 10 rounds or every 60 s" in html

    import matplotlib.image

    image = matplotlib.image.imread(str(shot))
    assert image.shape[0] >= 1000 and image.shape[1] >= 1000
    assert float(image[..., :3].std()) > 0.05  # not a blank page
