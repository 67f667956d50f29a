"""The testbed's pure parts (names, addresses, shards, Prometheus config, loss rules);
these need neither root nor namespaces."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from solora_node.testbed import nsnet
from solora_node.testbed.netns import (
    Testbed,
)
from solora_node.testbed.netns_plan import (
    METRICS_PORT,
    TestbedError,
    check_name,
    namespace_prefix,
    plan_hosts,
    prometheus_config,
)


def test_hosts_get_addresses_round_robin_tasks_and_disjoint_shards(tmp_path: Path) -> None:
    hosts = plan_hosts("x1", 5, ["arithmetic", "reverse"], "10.77.0.0/24", tmp_path)
    assert [h.address for h in hosts] == [f"10.77.0.{i}" for i in range(1, 6)]
    assert [h.namespace for h in hosts] == [f"snt-x1-h{i}" for i in range(1, 6)]
    assert [h.task for h in hosts] == ["arithmetic", "reverse"] * 2 + ["arithmetic"]
    assert [(h.shard_index, h.shard_count) for h in hosts] == [
        (0, 3), (0, 2), (1, 3), (1, 2), (2, 3),
    ]  # fmt: skip


def test_bridge_takes_the_last_usable_address(tmp_path: Path) -> None:
    bed = Testbed.plan("x2", 2, work_dir=tmp_path, subnet="10.99.3.0/24")
    assert bed.state.bridge_address == "10.99.3.254"
    assert bed.state.bridge_namespace == "snt-x2-br"
    with pytest.raises(TestbedError):
        plan_hosts("x2", 300, ["arithmetic"], "10.77.0.0/24", tmp_path)


@pytest.mark.parametrize("name", ["", "a-b", "UPPER", "x" * 13, "a/b"])
def test_names_that_could_clash_or_escape_are_refused(name: str) -> None:
    with pytest.raises(TestbedError):
        check_name(name)


def test_prefix_of_one_testbed_never_matches_another() -> None:
    assert not "snt-ab-h1".startswith(namespace_prefix("a"))


def test_prometheus_config_lists_every_node_and_passes_promtool(tmp_path: Path) -> None:
    hosts = plan_hosts("x3", 3, ["arithmetic", "reverse"], "10.77.0.0/24", tmp_path)
    config = prometheus_config(hosts)
    targets = [c["targets"][0] for c in config["scrape_configs"][0]["static_configs"]]
    assert targets == [f"10.77.0.{i}:{METRICS_PORT}" for i in (1, 2, 3)]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rates_are_validated_before_anything_changes() -> None:
    assert nsnet.rate_bits("2mbit") == 2_000_000
    assert nsnet.rate_bits("512kbit") == 512_000
    for bad in ("2mb", "fast", "-1mbit", ""):
        with pytest.raises(nsnet.NetnsError):
            nsnet.rate_bits(bad)
