"""Robust aggregation under poisoning, with the daemon's own aggregation code.

Five same-task peers (a complete cluster, Metropolis weights 1/5): each honest block is
the cluster's consensus plus local noise; one of the four neighbours sends a scaled or a
random block. We measure the relative distance of each rule's result to the clean result
(the same rule with the poisoner honest). Plain averaging is dragged arbitrarily far;
median and trimmed mean with norm clipping stay close.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from solora_node.federation.aggregate import aggregate_blocks
from tests.reliability.hostile import record

SHAPES = {"q": (64, 4), "v": (32, 4)}
RULES = {
    "mean": {"rule": "mean"},
    "median+clip": {"rule": "median", "clip_norm": 1.0},
    "trimmed_mean+clip": {"rule": "trimmed_mean", "trim_fraction": 0.2, "clip_norm": 1.0},
}


def _blocks(seed: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    consensus = {n: torch.randn(s, generator=gen) * 0.1 for n, s in SHAPES.items()}
    return [
        {n: c + 0.02 * torch.randn(c.shape, generator=gen) for n, c in consensus.items()}
        for _ in range(5)
    ]


def _poison(block: dict[str, torch.Tensor], kind: str, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1000)
    if kind == "scaled":
        return {n: -50.0 * b for n, b in block.items()}
    return {n: 5.0 * torch.randn(b.shape, generator=gen) for n, b in block.items()}


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    num = sum(float((a[n] - b[n]).pow(2).sum()) for n in a) ** 0.5
    den = sum(float(b[n].pow(2).sum()) for n in b) ** 0.5
    return num / den


def measure(kind: str, seeds: range = range(20)) -> dict[str, float]:
    """Worst relative distance to the clean result over seeds, per rule."""
    worst = dict.fromkeys(RULES, 0.0)
    for seed in seeds:
        own, *others = _blocks(seed)
        poisoned = [*others[:-1], _poison(others[-1], kind, seed)]
        for name, kw in RULES.items():
            clean = aggregate_blocks(own, others, [0.2] * 4, **kw)  # type: ignore[arg-type]
            dirty = aggregate_blocks(own, poisoned, [0.2] * 4, **kw)  # type: ignore[arg-type]
            worst[name] = max(worst[name], _distance(dirty, clean))
    return worst


@pytest.mark.parametrize("kind", ["scaled", "random"])
def test_one_poisoner_in_five_drags_the_mean_but_not_the_robust_rules(kind: str) -> None:
    worst = measure(kind)
    record(f"poisoning:{kind}", **{k: round(v, 3) for k, v in worst.items()})
    assert worst["mean"] > 1.0, worst  # the poisoner moves the plain average by > 100%
    assert worst["median+clip"] < 0.15, worst
    assert worst["trimmed_mean+clip"] < 0.15, worst


def test_robust_rules_cost_little_on_a_clean_cluster() -> None:
    for seed in range(10):
        own, *others = _blocks(seed)
        mean = aggregate_blocks(own, others, [0.2] * 4, rule="mean")
        for name, kw in list(RULES.items())[1:]:
            robust = aggregate_blocks(own, others, [0.2] * 4, **kw)  # type: ignore[arg-type]
            assert _distance(robust, mean) < 0.1, (name, seed)


# -- the same rules inside the simulation harness (bench poisoning's machinery) ----------


def _sim_states(**overrides: object) -> list[dict[str, torch.Tensor]]:
    """SO-LoRA blocks of 5 same-task devices on a complete graph after 2 rounds (tiny)."""
    from solora_node.model import load_base_model
    from solora_node.sim.config import SimConfig
    from solora_node.sim.devices import build_devices, eval_sets
    from solora_node.sim.rounds import SimFederation
    from solora_node.sim.solora import SoLoraStrategy
    from solora_node.sim.strategy import RunContext
    from solora_node.sim.topology import build_topology

    config = SimConfig(
        tasks=("topic",),
        devices_per_task=(5,),
        rounds=2,
        topology="complete",
        methods=("solora",),
        ablation_topologies=(),
        **overrides,  # type: ignore[arg-type]
    )
    config.check()
    devices = build_devices(config)
    topology = build_topology(config.topology, devices, config)
    torch.manual_seed(0)
    loaded = load_base_model("tiny", Path("unused"), seed=0)
    strategy = SoLoraStrategy(RunContext(config, devices, topology, loaded, eval_sets(devices, 2)))
    sim = SimFederation(strategy, topology, config)
    sim.start()
    for round_ in (1, 2):
        sim.run_round(round_)
    return [dict(strategy.own_block(i)) for i in range(5)]


@pytest.mark.parametrize("kind", ["scaled", "random"])
def test_sim_poisoner_moves_honest_devices_under_mean_not_under_median(kind: str) -> None:
    clean = _sim_states()
    clip = {"clip_norm": 0.01}
    poisoned_mean = _sim_states(poisoners=(4,), poison=kind)
    poisoned_median = _sim_states(poisoners=(4,), poison=kind, aggregation="median", **clip)
    poisoned_trimmed = _sim_states(poisoners=(4,), poison=kind, aggregation="trimmed_mean", **clip)
    honest = range(4)
    mean_moved = max(_distance(poisoned_mean[i], clean[i]) for i in honest)
    median_moved = max(_distance(poisoned_median[i], clean[i]) for i in honest)
    trimmed_moved = max(_distance(poisoned_trimmed[i], clean[i]) for i in honest)
    assert mean_moved > 1.0, mean_moved
    assert median_moved < 0.25 * mean_moved, (median_moved, mean_moved)
    assert trimmed_moved < 0.25 * mean_moved, (trimmed_moved, mean_moved)


def test_sim_rejects_a_poisoner_that_is_not_a_device() -> None:
    from solora_node.sim.config import SimConfigError, from_mapping

    with pytest.raises(SimConfigError, match="poisoners"):
        from_mapping({"poisoners": [9]})
    with pytest.raises(SimConfigError, match="aggregation"):
        from_mapping({"aggregation": "mode"})


def test_bench_poisoning_refuses_a_poisoner_outside_the_cluster(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from solora_node.cli import main as cli_main

    assert cli_main(["bench", "poisoning", "--model", "tiny", "--poisoner", "7"]) == 2
    assert "--poisoner 7: expected 0..4" in capsys.readouterr().err
