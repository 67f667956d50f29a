"""A short soak in CI: 4 nodes on loopback, 35 rounds; memory and fds flat after warm-up.

The full 200-round run is `solora-node bench soak --json` (figures in docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from solora_node.benchmarks.soak import soak
from tests.reliability.hostile import record

pytestmark = pytest.mark.slow


def test_short_soak_memory_and_fds_stay_flat(tmp_path: Path) -> None:
    result = soak(tmp_path, nodes=4, rounds=35, warmup_rounds=10, interval=0.5, timeout=400)
    record("soak-ci", **result)
    assert result["exit_codes"] == {n: 0 for n in result["per_node"]}
    for node, figures in result["per_node"].items():
        assert figures["rounds"] >= 35, (node, figures)
        # Medians of 5 samples at each end (see summarise): robust to one busy moment.
        assert figures["rss_growth_pct"] < 10.0, (node, figures)
        # Few fds: allow a couple of sockets in flight beyond 10%.
        assert figures["fds_end"] <= figures["fds_warm"] * 1.1 + 3, (node, figures)
