"""Aggregation of one task's blocks: gossip mean and the robust rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from solora_node.federation.aggregate import (
    TaskMismatchError,
    aggregate_blocks,
    clip_to,
    coordinate_median,
    gossip_average,
    trimmed_mean,
)
from solora_node.federation.graph import consensus_distance
from solora_node.federation.topology import Member, plan_topology


def block(*values: float, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A two-layer block: layer 'q' holds `values`, layer 'v' holds `values` times `scale`."""
    t = torch.tensor(values, dtype=torch.float32)
    return {"q": t.clone(), "v": (t * scale).reshape(1, -1)}


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


# -- gossip mean ---------------------------------------------------------------------


def test_gossip_average_is_the_weighted_formula() -> None:
    own, x, y = block(1.0, 2.0), block(3.0, 6.0), block(-1.0, 0.0)
    out = gossip_average(own, [(0.25, x), (0.25, y)], self_weight=0.5)
    expected = {k: 0.5 * own[k] + 0.25 * x[k] + 0.25 * y[k] for k in own}
    assert close(out, expected)


def test_missing_neighbour_weight_goes_to_self() -> None:
    own, x = block(1.0, 2.0), block(3.0, 6.0)
    # Planned: self 1/3, two neighbours 1/3 each; one neighbour is dead.
    out = gossip_average(own, [(1 / 3, x)], self_weight=1 / 3)
    assert close(out, {k: 2 / 3 * own[k] + 1 / 3 * x[k] for k in own})
    # No neighbour at all: the block is unchanged, not shrunk.
    assert close(gossip_average(own, [], self_weight=1 / 3), own)


def test_gossip_average_rejects_inconsistent_weights() -> None:
    own, x = block(1.0), block(2.0)
    with pytest.raises(ValueError, match="exceed 1"):
        gossip_average(own, [(0.6, x), (0.6, x)])
    with pytest.raises(ValueError, match="exceed 1"):
        gossip_average(own, [(0.5, x)], self_weight=0.75)
    with pytest.raises(ValueError, match=">= 0"):
        gossip_average(own, [(-0.1, x)])


def test_shape_and_layer_mismatch_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        gossip_average(block(1.0, 2.0), [(0.5, block(1.0, 2.0, 3.0))])
    with pytest.raises(ValueError, match="layers"):
        gossip_average(block(1.0), [(0.5, {"q": torch.ones(1)})])


def test_dtype_of_own_block_is_kept() -> None:
    own = {"q": torch.tensor([1.0, 2.0], dtype=torch.float16)}
    out = gossip_average(own, [(0.5, {"q": torch.tensor([3.0, 4.0], dtype=torch.float16)})])
    assert out["q"].dtype == torch.float16
    assert torch.equal(out["q"], torch.tensor([2.0, 3.0], dtype=torch.float16))


def test_cluster_round_preserves_average_even_with_a_failed_link() -> None:
    view = [Member(f"n{i}", "t") for i in range(7)]
    plan = plan_topology(view, ["t"], max_degree=3)
    rng = np.random.default_rng(1)
    state = {n: block(*rng.normal(size=4).tolist()) for n in plan.node_ids}
    # The link a--b fails in both directions this round.
    a = plan.node_ids[0]
    b = plan.cluster_neighbours(a)[0]
    new = {}
    for node in plan.node_ids:
        weights = plan.mixing_weights(node)
        present = [
            (weights[p], state[p]) for p in plan.cluster_neighbours(node) if {node, p} != {a, b}
        ]
        new[node] = gossip_average(state[node], present, self_weight=weights[node])
    for layer in ("q", "v"):
        before = torch.stack([s[layer] for s in state.values()]).mean(0)
        after = torch.stack([s[layer] for s in new.values()]).mean(0)
        assert torch.allclose(before, after, atol=1e-6)
    assert consensus_distance(list(new.values())) < consensus_distance(list(state.values()))


# -- robust rules ----------------------------------------------------------------------


def test_median_and_trimmed_mean_resist_one_outlier() -> None:
    own = block(1.0, 1.0)
    honest = [block(1.1, 0.9), block(0.9, 1.1), block(1.0, 1.05)]
    outlier = block(1e6, -1e6)
    for out in (
        coordinate_median(own, [*honest, outlier]),
        trimmed_mean(own, [*honest, outlier], trim_fraction=0.2),
        aggregate_blocks(own, [*honest, outlier], [0.2] * 4, rule="median"),
        aggregate_blocks(
            own, [*honest, outlier], [0.2] * 4, rule="trimmed_mean", trim_fraction=0.2
        ),
    ):
        assert all(v.abs().max() < 1.2 for v in out.values())
    mean = aggregate_blocks(own, [*honest, outlier], [0.2] * 4, rule="mean")
    assert mean["q"].abs().max() > 1e5  # the plain mean is not robust, by design


def test_median_exact_values() -> None:
    odd = coordinate_median(block(1.0), [block(5.0), block(3.0)])
    assert odd["q"].item() == 3.0
    even = coordinate_median(block(1.0), [block(5.0), block(3.0), block(4.0)])
    assert even["q"].item() == 3.5  # mean of the two middle values, order-free


def test_trimmed_mean_exact_values() -> None:
    copies = [block(v) for v in (2.0, 3.0, 4.0, 100.0)]
    # n = 5 copies, trim 0.2 -> drop 1 lowest and 1 highest: mean(2, 3, 4) = 3.
    assert trimmed_mean(block(-50.0), copies, 0.2)["q"].item() == pytest.approx(3.0)
    # trim 0 is the plain unweighted mean.
    assert trimmed_mean(block(1.0), [block(3.0)], 0.0)["q"].item() == pytest.approx(2.0)
    with pytest.raises(ValueError):
        trimmed_mean(block(1.0), [], 0.5)


def test_clipping_bounds_each_neighbours_pull() -> None:
    own = block(0.0, 0.0)
    far = block(30.0, 40.0)  # ||far - own|| over both layers = sqrt(2) * 50
    clipped = clip_to(own, far, 5.0)
    norm = torch.sqrt(sum(((clipped[k] - own[k]) ** 2).sum() for k in own))
    assert norm.item() == pytest.approx(5.0, rel=1e-5)
    # Direction kept, near copies untouched.
    assert clipped["q"][1] / clipped["q"][0] == pytest.approx(40 / 30)
    near = block(0.1, 0.1)
    assert close(clip_to(own, near, 5.0), near)
    out = aggregate_blocks(own, [far], [0.5], rule="mean", clip_norm=1.0)
    step = torch.sqrt(sum(((out[k] - own[k]) ** 2).sum() for k in own))
    assert step.item() <= 0.5 + 1e-6
    with pytest.raises(ValueError):
        clip_to(own, far, 0.0)


def test_aggregate_blocks_without_neighbours_returns_a_copy() -> None:
    own = block(1.0, 2.0)
    out = aggregate_blocks(own, [], [], rule="median")
    assert close(out, own) and out["q"] is not own["q"]


def test_aggregate_blocks_argument_checks() -> None:
    with pytest.raises(ValueError, match="weights"):
        aggregate_blocks(block(1.0), [block(2.0)], [])
    with pytest.raises(ValueError, match="unknown aggregation rule"):
        aggregate_blocks(block(1.0), [block(2.0)], [0.5], rule="mode")  # type: ignore[arg-type]


def test_blocks_of_different_tasks_are_never_mixed() -> None:
    own, x = block(1.0), block(2.0)
    with pytest.raises(TaskMismatchError, match="topic"):
        aggregate_blocks(own, [x], [0.5], task="arithmetic", neighbour_tasks=["topic"])
    with pytest.raises(ValueError):
        aggregate_blocks(own, [x], [0.5], neighbour_tasks=["arithmetic"])
    ok = aggregate_blocks(own, [x], [0.5], task="arithmetic", neighbour_tasks=["arithmetic"])
    assert ok["q"].item() == pytest.approx(1.5)
