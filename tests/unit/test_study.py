"""The study's pieces that need no model: validation splits, sim config checks, run
selection, the learning-rate choice, bootstrap intervals and the targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from solora_node.commands.sim import with_runs
from solora_node.commands.study import parse_densities, parse_grid
from solora_node.data.examples import DataError
from solora_node.data.tasks import builtin_task
from solora_node.errors import SoloraError
from solora_node.sim.config import PRESETS, SimConfigError, from_mapping
from solora_node.sim.study import (
    Job,
    choose_lr,
    lr_job,
    pareto_jobs,
    seed_jobs,
    selection_jobs,
)
from solora_node.sim.study_report import Arm, analyse, bytes_to_reach, summarise, targets


def test_validation_is_held_out_of_train_before_sharding() -> None:
    whole = builtin_task("topic", 0)
    shards = [builtin_task("topic", 0, i, 2, validation=32) for i in range(2)]
    held = shards[0].validation
    assert len(held) == 32 and held == shards[1].validation
    trained = {ex.input for s in shards for ex in s.train}
    assert not trained & {ex.input for ex in held}
    assert not {ex.input for ex in held} & {ex.input for ex in whole.eval}
    assert len(trained) + 32 == len(whole.train)
    with pytest.raises(DataError, match="at most half"):
        builtin_task("topic", 0, validation=len(whole.train))


def test_sim_config_rejects_bad_study_fields() -> None:
    with pytest.raises(SimConfigError, match="lr_by_method"):
        from_mapping({"lr_by_method": {"magic": 0.01}})
    with pytest.raises(SimConfigError, match=r"lr_by_method\.lora"):
        from_mapping({"lr_by_method": {"lora": -1}})
    with pytest.raises(SimConfigError, match="eval_rounds"):
        from_mapping({"rounds": 3, "eval_rounds": [4]})
    with pytest.raises(SimConfigError, match="task_dirs"):
        from_mapping({"task_dirs": {"nosuch": "x"}})
    with pytest.raises(SimConfigError, match="validation_examples"):
        from_mapping({"score_on": "validation"})
    with pytest.raises(SimConfigError, match="eval_mode"):
        from_mapping({"eval_mode": "some"})
    config = from_mapping({"preset": "study", "lr_by_method": {"solora": 0.02}})
    assert config.lr_for("solora") == 0.02 and config.lr_for("lora") == config.lr
    assert [r for r in range(1, 21) if config.evaluates_at(r)] == [5, 10, 20]


def test_user_configs_get_no_silent_ablation_and_presets_name_theirs() -> None:
    assert from_mapping({"methods": ["solora"]}).ablation_topologies == ()
    assert PRESETS["paper"].ablation_topologies == ("random",)


def test_methods_flag_splits_methods_from_ablations() -> None:
    config = with_runs(PRESETS["study"], "lora, solora@random")
    assert config.methods == ("lora",) and config.ablation_topologies == ("random",)
    with pytest.raises(SoloraError, match="only solora@"):
        with_runs(PRESETS["study"], "lora@ring")
    with pytest.raises(SoloraError, match="expected a comma-separated"):
        with_runs(PRESETS["study"], " , ")


def test_grid_flag_parses_and_rejects() -> None:
    assert parse_grid("solora=0.01,0.02; lora=0.002") == {
        "solora": [0.01, 0.02],
        "lora": [0.002],
    }
    with pytest.raises(SoloraError, match="METHOD=LR"):
        parse_grid("solora=fast")
    with pytest.raises(SoloraError, match="no learning rate"):
        parse_grid("solora=")


def _fake_results(folder: Path, run: str, validation: float) -> None:
    folder.mkdir(parents=True)
    entry = {"rounds": [{"round": 1, "validation": {"avg_accuracy": validation}}]}
    (folder / "results.json").write_text(json.dumps({"methods": {run: entry}}))


def test_lr_choice_reads_validation_and_prefers_the_smaller_rate_on_ties(tmp_path: Path) -> None:
    grid = {"solora": [0.006, 0.02, 0.06], "lora": [0.002, 0.006]}
    scores = {("solora", 0.006): 0.3, ("solora", 0.02): 0.5, ("solora", 0.06): 0.4}
    scores |= {("lora", 0.002): 0.4, ("lora", 0.006): 0.4}
    for job in selection_jobs(grid, 0):
        lr = job.overrides["lr_by_method"][job.run]
        _fake_results(tmp_path / job.name, job.run, scores[(job.run, lr)])
    assert choose_lr(tmp_path, grid, 0) == {"solora": 0.02, "lora": 0.002}
    # Seed 0 of the chosen rate is the grid's own job: it is not run twice.
    jobs = seed_jobs(["solora", "local", "solora@random"], {"solora": 0.02, "lora": 0.002}, [0, 1])
    assert lr_job("solora", 0, 0.02) in jobs
    assert Job("local", 1, {"lr_by_method": {"local": 0.002}}) in jobs
    assert lr_job("solora@random", 1, 0.02).name == "solora-at-random_seed1_lr_by_methodsolora0.02"


def _arm(label: str, accuracy: float, sent: int, seeds: int = 3, n: int = 64) -> Arm:
    rng = np.random.default_rng(hash(label) % 1000)
    examples = {
        s: {t: (rng.random(n) < accuracy).astype(float) for t in ("a", "b")} for s in range(seeds)
    }
    curve = {s: [(10, accuracy / 2, sent // 2), (20, accuracy, sent)] for s in range(seeds)}
    return Arm(
        label, label.split(" ")[0], 0.01, examples, dict.fromkeys(range(seeds), sent), curve, {}, {}
    )


def test_bootstrap_calls_a_clear_gap_a_win_and_noise_no_difference() -> None:
    base = {s: {t: np.zeros(64) for t in ("a", "b")} for s in range(3)}
    arms = [
        _arm("solora (auto gate)", 0.8, 1_000),
        _arm("lora", 0.3, 100_000),
        _arm("hard_moe", 0.8, 50_000),
    ]
    summary = analyse(arms, base)
    win = summary["differences"]["solora (auto gate) - lora"]
    assert win["verdict"] == "win" and win["interval"][0] > 0.3
    tie = summary["differences"]["hard_moe - solora (auto gate)"]
    assert tie["interval"][0] < 0 < tie["interval"][1]
    assert summary["interference"]["lora"]["a"]["mean"] < -0.3
    rows = {row["target"]: row for row in targets(summary)}
    assert rows["SO-LoRA (auto) above LoRA-DFL by >= 5 pts, interval excluding 0"]["met"]
    reach = rows[">= 90% fewer bytes than LoRA-DFL to reach LoRA-DFL's final accuracy"]
    assert reach["met"] and "99.5% fewer" in reach["measured"]


def test_runs_with_fewer_seeds_do_not_shrink_the_main_comparison() -> None:
    base = {s: {t: np.zeros(64) for t in ("a", "b")} for s in range(3)}
    arms = [
        _arm("solora (auto gate)", 0.8, 1_000),
        _arm("lora", 0.3, 100_000),
        _arm("lori", 0.5, 5_000, seeds=1),
    ]
    summary = summarise(arms, base, [0, 1, 2])
    assert summary["seeds"] == [0, 1, 2] and "lori" not in summary["arms"]
    fewer = summary["fewer_seeds"]
    assert fewer["seeds"] == [0] and fewer["partial_runs"] == ["lori"]
    assert fewer["differences"]["solora (auto gate) - lori"]["verdict"] == "win"
    lori = [row for row in summary["targets"] if row["target"].startswith("above LoRI")]
    assert len(lori) == 1 and lori[0]["met"] and "(seeds [0] only)" in lori[0]["measured"]


def test_pareto_jobs_scale_the_rate_as_one_over_density() -> None:
    jobs = pareto_jobs(0.06, 0.1, [0.05, 0.1, 0.5], [0])
    rates = {j.overrides["density"]: j.overrides["lr_by_method"]["solora"] for j in jobs}
    assert rates == pytest.approx({0.05: 0.12, 0.5: 0.012})  # the base density is not rerun
    with pytest.raises(SoloraError, match="--densities"):
        parse_densities("0.1,2")


def test_bytes_to_reach_is_none_when_never_reached() -> None:
    lora = {"mean": 0.9, "bytes_mean": 1000.0}
    assert bytes_to_reach([(10, 0.5, 10.0), (20, 0.6, 20.0)], lora) is None
    assert bytes_to_reach([(10, 0.5, 10.0), (20, 0.95, 20.0)], lora) == pytest.approx(0.98)


def test_unset_learning_rate_follows_density() -> None:
    from solora_node.config import TrainSection
    from solora_node.defaults import DENSE_LR
    from solora_node.method_settings import train_settings

    assert train_settings(TrainSection(), 0.1).lr == pytest.approx(DENSE_LR / 0.1)
    assert train_settings(TrainSection(), 1.0).lr == pytest.approx(DENSE_LR)
    assert train_settings(TrainSection(), 0.001).lr == 0.1  # capped
    assert train_settings(TrainSection(lr=0.005), 0.1).lr == 0.005  # set: kept
