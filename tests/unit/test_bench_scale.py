"""`bench scale` runs small sizes end to end: its figures are measured, so check the
relations any honest measurement must show (never timings)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from solora_node import cli


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    argv = ["bench", "scale", "--json", "--members", "10,40", "--repeats", "1"]
    argv += ["--round-nodes", "6,12", "--round-tasks", "1,3", "--rounds", "6", "--layers", "2"]
    out: dict[str, Any] = {}

    def emit(text: str) -> None:
        out.update(json.loads(text))

    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert cli.main(argv) == 0
    emit(buffer.getvalue())
    return out


def test_planning_quality_is_reported_per_size(result: dict[str, Any]) -> None:
    assert [p["members"] for p in result["planning"]] == [10, 40]
    for row in result["planning"]:
        assert row["plan_s"] >= 0 and row["replan_s"] >= 0
        assert 0 < row["spectral_gap"]["min"] <= row["spectral_gap"]["median"] <= 1
        assert row["max_cluster_degree"] <= result["max_degree"]
        assert row["federation_diameter"]["value"] >= row["cluster_diameter"]["value"] >= 0
        assert row["federation_diameter"]["exact"]


def test_one_task_sends_only_its_own_block_to_each_neighbour(result: dict[str, Any]) -> None:
    for row in (r for r in result["rounds"] if r["tasks"] == 1):
        assert row["relayed_bytes"]["max"] == 0
        assert row["foreign_experts_held"]["max"] == 0
        # Steady state: one block per planned link per round, nothing else.
        assert row["items_sent"]["mean"] == pytest.approx(row["links_per_node"]["mean"])
        assert row["bytes_sent"]["mean"] == pytest.approx(
            row["links_per_node"]["mean"] * row["block_bytes"]
        )


def test_other_tasks_experts_are_relayed_and_held(result: dict[str, Any]) -> None:
    for row in (r for r in result["rounds"] if r["tasks"] == 3):
        assert row["foreign_experts_held"]["mean"] == 2  # every other task's expert
        assert row["relayed_bytes"]["max"] > 0
        assert row["bytes_sent"]["max"] > row["bytes_sent"]["mean"]  # bridges carry more


def test_planning_only_runs_no_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "scale", "--json", "--members", "10", "--repeats", "1", "--planning-only"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["members"] for p in out["planning"]] == [10] and out["rounds"] == []
