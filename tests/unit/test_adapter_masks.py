"""Masks: density allocation, magnitude/seeded masks, hashes, collision rate, calibration."""

from __future__ import annotations

import pytest
import torch

from solora_node.adapter import calibrate, collision_rate, mask_id, seeded_random_masks
from solora_node.adapter import masks as mask_ops
from solora_node.adapter.calibration import calibrated_masks, layer_scores
from solora_node.config import FederationSection
from solora_node.method_settings import mask_settings
from tests.unit.test_adapter_helpers import ARITH, lm_batch, tiny_federation, train_steps


def test_allocation_spends_the_budget_and_respects_the_clip() -> None:
    numels = {"a": 1000, "b": 1000, "c": 4000, "d": 500}
    scores = {"a": 30.0, "b": 2.0, "c": 1.0, "d": 0.0}
    rho = mask_ops.allocate_densities(scores, numels, budget=0.3, density_min=0.05)
    kept = sum(rho[n] * numels[n] for n in numels)
    assert kept == pytest.approx(0.3 * sum(numels.values()), rel=1e-6)
    assert all(0.05 <= r <= 1.0 for r in rho.values())
    assert rho["a"] == 1.0 and rho["d"] == 0.05  # clipped at both ends
    assert rho["b"] / rho["c"] == pytest.approx(2.0, rel=1e-6)  # proportional in between
    uniform = mask_ops.allocate_densities({}, numels, budget=0.3, density_min=0.05)
    assert set(uniform.values()) == {0.3}


def test_magnitude_mask_keeps_the_largest_entries() -> None:
    block = torch.tensor([[0.1, -5.0], [3.0, 0.2], [0.0, -0.3]])
    mask = mask_ops.magnitude_mask(block, density=2 / 6)
    assert mask.tolist() == [[False, True], [True, False], [False, False]]


def test_random_mask_is_seeded_and_task_specific() -> None:
    a = mask_ops.random_mask(1, "arith", "l0", (64, 4), 0.1)
    assert torch.equal(a, mask_ops.random_mask(1, "arith", "l0", (64, 4), 0.1))
    assert int(a.sum()) == round(0.1 * 256)
    assert not torch.equal(a, mask_ops.random_mask(1, "lang", "l0", (64, 4), 0.1))
    assert not torch.equal(a, mask_ops.random_mask(2, "arith", "l0", (64, 4), 0.1))


def test_pack_unpack_and_mask_id() -> None:
    mask = mask_ops.random_mask(3, "t", "l", (13, 3), 0.3)
    packed = mask_ops.pack_mask(mask)
    assert len(packed) == (39 + 7) // 8
    assert torch.equal(mask_ops.unpack_mask(packed, (13, 3)), mask)
    flipped = mask.clone()
    flipped[0, 0] = ~flipped[0, 0]
    assert mask_id({"l": mask}) != mask_id({"l": flipped})
    assert mask_id({"l": mask}) == mask_id({"l": mask.clone()})


def test_collision_rate() -> None:
    a = {"l": torch.tensor([[True, True], [False, False]])}
    b = {"l": torch.tensor([[True, False], [True, False]])}
    assert collision_rate(a, b) == 0.5
    assert collision_rate(a, a) == 1.0
    assert collision_rate({"l": torch.zeros(2, 2, dtype=torch.bool)}, b) == 0.0


def test_every_node_of_a_task_derives_the_same_random_mask() -> None:
    _, one = tiny_federation()
    _, two = tiny_federation(model_seed=5)  # other weights, same federation
    fed = FederationSection(
        tasks=["arith", "lang", "rev"], mask_mode="random", density=0.2, density_min=0.01
    )
    assert calibrate(one, "arith", mask_settings(fed)) == calibrate(
        two, "arith", mask_settings(fed)
    )
    assert collision_rate(one.masks("arith"), two.masks("arith")) == 1.0
    assert collision_rate(one.masks("arith"), seeded_random_masks(one, "lang", 0.2)) < 0.5


@pytest.mark.parametrize("allocation", ["uniform", "magnitude", "spectral"])
def test_calibration_after_warmup(allocation: str) -> None:
    loaded, so = tiny_federation()
    batch = lm_batch(loaded.tokenizer, ARITH[:8])
    train_steps(so, "arith", batch, steps=3)
    fed = FederationSection(
        tasks=["arith", "lang", "rev"],
        density=0.1,
        density_min=0.02,
        sparsity_allocation=allocation,
    )
    scores = layer_scores(so, "arith", allocation, [batch])
    assert (scores == {}) == (allocation == "uniform")
    before = {n: layer.lora_B["arith"].detach().clone() for n, layer in so.layers.items()}
    expected = calibrated_masks(so, "arith", 0.1, 0.02, allocation, [batch])
    ident = calibrate(so, "arith", mask_settings(fed), [batch])
    assert ident == mask_id(expected) == so.mask_id("arith")
    total = sum(m.numel() for m in expected.values())
    kept = sum(int(m.sum()) for m in expected.values())
    assert abs(kept - 0.1 * total) <= len(expected)  # per-layer rounding only
    for name, mask in expected.items():
        kept_values = before[name].abs()[mask]
        dropped = before[name].abs()[~mask]
        assert kept_values.min() >= dropped.max()  # largest magnitudes kept
        assert bool((so.layers[name].lora_B["arith"] == 0).all())  # reset after calibration


def test_spectral_scores_are_energy_fractions() -> None:
    loaded, so = tiny_federation()
    batch = lm_batch(loaded.tokenizer, ARITH[:8])
    scores = layer_scores(so, "lang", "spectral", [batch])
    # A_t has r orthonormal rows: it captures a fraction of the input energy in [0, 1].
    assert all(0.0 < s < 1.0 for s in scores.values())
