"""The docker-compose testbed, run for real: 6 nodes over 3 tasks, Prometheus, on one Docker host.

Builds the images without a registry (deploy/images/build.sh: debootstrap base, host
wheelhouse, cached between runs), starts docker-compose.yml with deploy/compose/tiny.yml
(tiny model, mDNS only, no bootstrap list) on its internal network, and proves that the
nodes turn healthy, discover each other, form the planned clusters and exchange deltas;
that Prometheus scrapes them and every dashboard and alert query finds series; that a
SIGTERM stop is clean and a restart resumes from the checkpoint volume; and that a
SIGKILL and a network cut do not stop the others, and the cut node rejoins. One testbed
is shared by the module (tests run in file order); it is torn down even on failure, the
images are kept as the build cache. Needs root, docker.io, docker-compose and
debootstrap; skips with the reason otherwise. The figures it measured are printed and,
with SOLORA_COMPOSE_FIGURES=FILE, written there as JSON.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from tests.compose.testbed import (
    NETWORK,
    NODES,
    ComposeTestbed,
    Engine,
    missing_tools,
    run,
    wait_for,
)
from tests.deploy.test_deploy_files import alert_rules, dashboard_queries, grafana_to_promql

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(3600)]

TASK_OF = {
    "node-1": "arithmetic",
    "node-2": "arithmetic",
    "node-3": "topic",
    "node-4": "topic",
    "node-5": "language",
    "node-6": "language",
}
LIVE_TIMEOUT_S = 300.0  # six tiny-model nodes starting at once on a shared 2-core host
GRACE_PERIOD_S = 25.0  # docker-compose.yml's stop_grace_period
# The liveness deadline (6 s) and deploy/compose/tiny.yml's health interval (1 s), plus
# slack for the health call's own timeout and a scrape on a busy machine.
DROP_VISIBLE_S = 6.0 + 1.0 + 2.0 + 10.0
FIGURES: dict[str, object] = {}

Metrics = dict[str, dict[str, float] | None]


def _value(metrics: Metrics, node: str, key: str) -> float:
    samples = metrics.get(node)
    return float("nan") if samples is None else samples.get(key, 0.0)


def _wait_metrics(
    bed: ComposeTestbed,
    condition: Callable[[Metrics], bool],
    timeout: float,
    what: str,
    nodes: Sequence[str] = NODES,
) -> Metrics:
    """Poll the nodes' /metrics until condition holds; fail with each node's headline."""
    seen: Metrics = {}

    def probe() -> Metrics | None:
        nonlocal seen
        seen = bed.scrape_all(nodes)
        return seen if condition(seen) else None

    try:
        return wait_for(probe, timeout, what)
    except TimeoutError as exc:
        rows = {
            n: {
                k: _value(seen, n, k)
                for k in ("solora_round{}", "solora_peers{state=live}", "solora_cluster_size{}")
            }
            for n in nodes
        }
        pytest.fail(f"{exc}\n{json.dumps(rows, indent=1)}")


@pytest.fixture(scope="module")
def bed() -> Iterator[ComposeTestbed]:
    reason = missing_tools()
    if reason is not None:
        pytest.skip(reason)
    engine = Engine()
    reason = engine.start()
    if reason is not None:
        pytest.skip(reason)
    testbed = ComposeTestbed()
    try:
        FIGURES["build_summary"] = testbed.build()
        FIGURES["build_seconds"] = round(testbed.build_seconds or 0.0, 1)
        testbed.up()
        yield testbed
    finally:
        testbed.down()
        left = testbed.leftovers()
        engine.stop()
        print("compose figures:", json.dumps(FIGURES))
        if os.environ.get("SOLORA_COMPOSE_FIGURES"):
            with open(os.environ["SOLORA_COMPOSE_FIGURES"], "w", encoding="utf-8") as out:
                json.dump(FIGURES, out, indent=1)
        assert not left, f"left behind: {left}"


def test_nodes_discover_each_other_over_mdns_form_clusters_and_exchange(
    bed: ComposeTestbed,
) -> None:
    env = bed.inspect("node-1")["Config"]["Env"]
    assert "SOLORA_NETWORK__BOOTSTRAP_PEERS=[]" in env  # discovery is mDNS alone

    def converged(m: Metrics) -> bool:
        return all(
            _value(m, n, "solora_peers{state=live}") == len(NODES) - 1
            and _value(m, n, "solora_cluster_size{}") == 2
            and _value(m, n, "solora_bytes_sent_total{kind=delta}") > 0
            and _value(m, n, "solora_bytes_received_total{kind=delta}") > 0
            and _value(m, n, "solora_round{}") >= 3
            for n in NODES
        )

    _wait_metrics(bed, converged, LIVE_TIMEOUT_S, "5 live peers, cluster of 2, delta bytes")
    assert bed.up_at is not None
    FIGURES["seconds_to_all_nodes_live"] = round(time.monotonic() - bed.up_at, 1)
    # The planned clusters are the task pairs: each node's cluster peer has its task.
    for node in NODES:
        info = json.loads(
            run(["docker", "exec", bed.container(node), "cat", "/var/lib/solora-node/node.json"])
        )
        assert info["task"] == TASK_OF[node], info


def test_image_healthcheck_turns_healthy(bed: ComposeTestbed) -> None:
    # The image's HEALTHCHECK probes every 15 s; give it a few probes.
    wait_for(
        lambda: all(bed.health(n) == "healthy" for n in NODES),
        90,
        "every node container reports healthy",
    )


def _operands(expr: str) -> list[str]:
    """The sides of top-level `and`/`or`/`unless`, each without a trailing comparison with a
    number or an `offset`: what must find series when the metrics exist (a healthy node
    fires no alert, and a young testbed has no data 10 minutes back)."""
    parts, depth, start = [], 0, 0
    for match in re.finditer(r"[()]|\b(?:and|or|unless)\b(?:\s+on\s*\([^)]*\))?", expr):
        token = match.group()
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0:
            parts.append(expr[start : match.start()])
            start = match.end()
    parts.append(expr[start:])
    cleaned = []
    for part in parts:
        part = re.sub(r"\s+offset\s+\d+[smhd]", "", part.strip())
        part = re.sub(r"\s*(==|!=|>=|<=|>|<)\s*-?[\d.]+\s*$", "", part)
        cleaned.append(part)
    return cleaned


def _promql(expr: str) -> str:
    """A Grafana query as PromQL: variables filled in, label_values(m, l) -> m."""
    found = re.fullmatch(r"label_values\((.+),\s*\w+\)", expr.strip())
    return found.group(1) if found else grafana_to_promql(expr)


def test_prometheus_scrapes_every_node_and_every_dashboard_and_alert_query_has_series(
    bed: ComposeTestbed,
) -> None:
    def every_node_up() -> bool:
        up = {
            r["metric"]["node"]: float(r["value"][1])
            for r in bed.prometheus('up{job="solora-node"}')
        }
        return up == dict.fromkeys(NODES, 1.0)

    wait_for(every_node_up, 90, "prometheus: up == 1 for every node")
    queries = [(where, _promql(expr)) for where, expr in dashboard_queries()]
    queries += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    checks = [(where, operand) for where, expr in queries for operand in _operands(expr)]
    empty: list[str] = []

    def all_have_series() -> bool:
        empty[:] = [f"{where}: {q}" for where, q in checks if not bed.prometheus(q)]
        return not empty

    # rate() over 1m needs two scrapes (15 s apart); accuracy needs an evaluation round.
    try:
        wait_for(all_have_series, 120, "every dashboard and alert query returns a series", 5.0)
    except TimeoutError:
        pytest.fail("queries without a series:\n" + "\n".join(empty))
    rounds = bed.prometheus('rate(solora_rounds_total{job="solora-node"}[2m]) * 60')
    FIGURES["rounds_per_minute_per_node"] = {
        r["metric"]["node"]: round(float(r["value"][1]), 1) for r in rounds
    }
    FIGURES["memory_mib_per_node"] = {n: round(v) for n, v in bed.memory_mib().items()}


def test_sigterm_stop_exits_zero_in_grace_and_start_resumes_from_checkpoint(
    bed: ComposeTestbed,
) -> None:
    node, peer = "node-3", "node-4"
    others = [n for n in NODES if n != node]
    before = bed.scrape(node)
    assert before is not None
    round_before = before["solora_round{}"]
    started = time.monotonic()
    bed.compose("stop", "--timeout", str(int(GRACE_PERIOD_S)), node)
    stopped_after = time.monotonic() - started
    state = bed.inspect(node)["State"]
    assert state["ExitCode"] == 0, bed.logs(node)
    assert stopped_after < GRACE_PERIOD_S
    FIGURES["sigterm_stop_seconds"] = round(stopped_after, 1)
    _wait_metrics(
        bed,
        lambda m: (
            _value(m, peer, "solora_cluster_size{}") == 1
            and all(_value(m, n, "solora_peers{state=live}") == len(NODES) - 2 for n in others)
        ),
        DROP_VISIBLE_S + 20,
        f"{node} dropped, {peer}'s cluster re-planned to 1",
        nodes=others,
    )
    bed.compose("start", node)
    resumed = wait_for(
        lambda: re.search(r"resumed from checkpoint round (\d+)", bed.logs(node, tail=200)),
        120,
        f"{node} logs that it resumed from its checkpoint",
    )
    assert int(resumed.group(1)) >= round_before
    _wait_metrics(
        bed,
        lambda m: (
            _value(m, peer, "solora_cluster_size{}") == 2
            and _value(m, node, "solora_round{}") > int(resumed.group(1))
        ),
        120,
        f"{node} back in {peer}'s cluster and training on",
    )


def test_killed_and_disconnected_nodes_do_not_stop_the_rest_and_the_cut_one_rejoins(
    bed: ComposeTestbed,
) -> None:
    killed, cut = "node-5", "node-2"
    rest = [n for n in NODES if n not in (killed, cut)]
    at_start = bed.scrape_all(rest)
    rounds = {n: _value(at_start, n, "solora_round{}") for n in rest}
    run(["docker", "kill", "--signal", "SIGKILL", bed.container(killed)])
    cut_id = bed.container(cut)
    run(["docker", "network", "disconnect", NETWORK, cut_id])
    try:
        _wait_metrics(
            bed,
            lambda m: (
                all(_value(m, n, "solora_round{}") >= rounds[n] + 3 for n in rest)
                and all(_value(m, n, "solora_peers{state=live}") == len(rest) - 1 for n in rest)
            ),
            DROP_VISIBLE_S + 120,
            f"{killed} killed and {cut} cut off: the other four drop them and make 3 rounds",
            nodes=rest,
        )
    finally:
        # Reconnected under its service name, which is the address its peers dial.
        run(["docker", "network", "connect", "--alias", cut, NETWORK, cut_id])
    if bed.inspect(killed)["State"]["Status"] != "running":
        bed.compose("start", killed)
    _wait_metrics(
        bed,
        lambda m: (
            all(_value(m, n, "solora_peers{state=live}") == len(NODES) - 1 for n in NODES)
            and all(_value(m, n, "solora_cluster_size{}") == 2 for n in NODES)
        ),
        180,
        f"{cut} rejoins after the reconnect and {killed} after its restart",
    )
