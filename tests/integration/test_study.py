"""`solora-node study` end to end on the tiny model: the lr choice, a second seed as its
own process, the merged report with intervals (the numbers mean nothing on a random
model; the machinery is what is checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

GRID = "solora=0.006,0.02;lora=0.002"


def _study(stage: str, out: Path, *extra: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "solora_node",
            "study",
            stage,
            "--out",
            str(out),
            "--preset",
            "study-tiny",
            "--grid",
            GRID,
            "--seeds",
            "2",
            "--runs",
            "solora,lora",
            *extra,
        ],
        check=True,
        timeout=600,
    )


def test_study_chooses_on_validation_runs_seeds_and_reports(tmp_path: Path) -> None:
    _study("select", tmp_path)
    chosen = json.loads((tmp_path / "chosen.json").read_text())
    assert set(chosen) == {"solora", "lora"} and chosen["lora"] == 0.002
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(jobs) == 3
    _study("seeds", tmp_path)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 5  # + seed 1 of each
    # SO-LoRA at another density, its rate scaled as 1/density from the chosen one.
    _study("pareto", tmp_path, "--densities", "0.05")
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 7  # + d=0.05, seeds 0 and 1
    _study("report", tmp_path, "--densities", "0.05")
    summary = json.loads((tmp_path / "study.json").read_text())
    points = {p["label"]: p for p in summary["pareto"]["points"]}
    assert points["solora d=0.05"]["lr"] == pytest.approx(chosen["solora"] * 0.1 / 0.05)
    assert points["solora d=0.05"]["bytes_mean"] < points["solora (auto gate)"]["bytes_mean"]
    assert "lora" in points
    assert summary["seeds"] == [0, 1]
    arms = summary["arms"]
    assert {"solora (auto gate)", "solora (oracle gate)", "lora", "base model"} <= set(arms)
    low, high = arms["lora"]["interval"]
    assert low <= arms["lora"]["mean"] <= high
    assert arms["lora"]["lr"] == 0.002
    assert [row["method"] for row in summary["selection"]] == ["solora", "solora", "lora"]
    main_row = f"| solora (auto gate) | {chosen['solora']} |"
    assert (tmp_path / "study.md").read_text().count(main_row) == 1
    # A finished study is not run again: a second seeds stage starts no job.
    before = {p: p.stat().st_mtime for p in tmp_path.glob("*/results.json")}
    _study("seeds", tmp_path)
    assert before == {p: p.stat().st_mtime for p in tmp_path.glob("*/results.json")}
