"""The node configs `bench util` and `bench fleet` give the testbed: they validate, and
they are what the benchmarks claim (the daemon's defaults where they say so). Pure: no
root, no namespaces."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from solora_node.benchmarks import fleet, util
from solora_node.config import NodeConfig, RoundsSection, TrainSection
from solora_node.errors import SoloraError
from solora_node.testbed.netns import Testbed


def _configs(bed: Testbed) -> list[NodeConfig]:
    bed._write_configs()
    return [
        NodeConfig.model_validate(yaml.safe_load(Path(h.config).read_text()))
        for h in bed.state.hosts
    ]


@pytest.mark.parametrize("overlap", [True, False])
def test_util_runs_the_daemon_defaults_on_one_thread(tmp_path: Path, overlap: bool) -> None:
    base = util.daemon_defaults("default", 1, overlap)
    bed = Testbed.plan("cfgutil", 3, work_dir=tmp_path, base=base, tls=False)
    for cfg in _configs(bed):
        assert cfg.model.base == "default"
        assert cfg.train == TrainSection(threads=1)
        assert cfg.rounds == RoundsSection(overlap_exchange=overlap)
        assert cfg.discovery.interfaces == [cfg.network.listen_host]


def test_fleet_runs_the_tiny_model_with_default_pacing(tmp_path: Path) -> None:
    bed = Testbed.plan("cfgfleet", 4, work_dir=tmp_path, base=fleet.fleet_config(), tls=False)
    for cfg in _configs(bed):
        assert cfg.model.base == "tiny"
        assert cfg.rounds == RoundsSection()
        assert cfg.network.bootstrap_peers == []  # mDNS finds everyone


def test_bad_arguments_are_refused_before_anything_starts() -> None:
    with pytest.raises(SoloraError, match="--modes 'fast'"):
        util.run(argparse.Namespace(modes="fast", nodes=3))
    with pytest.raises(SoloraError, match="--nodes 1"):
        util.run(argparse.Namespace(modes="overlap", nodes=1))
    with pytest.raises(SoloraError, match="--nodes 300"):
        fleet.run(argparse.Namespace(nodes=300))
