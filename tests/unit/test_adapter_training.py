"""Training properties: orthogonal updates, untouched foreign blocks, exact sparsity."""

from __future__ import annotations

import torch

from solora_node.adapter import calibrate, set_block_tensors
from solora_node.config import FederationSection
from solora_node.method_settings import mask_settings
from tests.unit.test_adapter_helpers import ARITH, LANG, lm_batch, tiny_federation, train_steps


def test_updates_of_two_tasks_trained_on_different_data_are_orthogonal() -> None:
    loaded, so = tiny_federation()
    train_steps(so, "arith", lm_batch(loaded.tokenizer, ARITH[:8]), steps=8)
    train_steps(so, "lang", lm_batch(loaded.tokenizer, LANG), steps=8)
    dw_a, dw_l = so.delta_weights("arith"), so.delta_weights("lang")
    for name in so.layers:
        a, b = dw_a[name].double(), dw_l[name].double()
        assert a.norm() > 1e-3 and b.norm() > 1e-3
        inner = float((a * b).sum())
        assert abs(inner) < 1e-5 * float(a.norm() * b.norm()) + 1e-9, name


def test_training_a_task_leaves_every_other_block_bit_identical() -> None:
    loaded, so = tiny_federation()
    generator = torch.Generator().manual_seed(0)
    for task in ("lang", "rev"):  # foreign blocks as if received from peers
        set_block_tensors(
            so, task, {n: torch.randn(s, generator=generator) for n, s in so.block_shapes().items()}
        )
    foreign = {
        t: {n: layer.lora_B[t].detach().clone() for n, layer in so.layers.items()}
        for t in ("lang", "rev")
    }
    # Weight decay over "everything the trainer was given" must not reach other tasks either.
    train_steps(so, "arith", lm_batch(loaded.tokenizer, ARITH[:8]), steps=10, weight_decay=0.1)
    for t, blocks in foreign.items():
        for name, layer in so.layers.items():
            assert torch.equal(layer.lora_B[t], blocks[name]), (t, name)
    assert any(bool(layer.lora_B["arith"].abs().sum() > 0) for layer in so.layers.values())


def test_masked_entries_stay_exactly_zero_through_sparse_training() -> None:
    loaded, so = tiny_federation()
    batch = lm_batch(loaded.tokenizer, ARITH[:8])
    fed = FederationSection(tasks=["arith", "lang", "rev"], density=0.1, density_min=0.02)
    optimizer = train_steps(so, "arith", batch, steps=5, weight_decay=0.1)  # dense warm-up
    calibrate(so, "arith", mask_settings(fed), [batch])
    # Keep the warm-up optimiser: its moments must be masked too, else Adam moves zeros.
    so.mask_optimizer_state(optimizer, so.grad_masks("arith"))
    # No B *= mask safety net: the masked gradients and moments alone must keep the zeros.
    train_steps(so, "arith", batch, steps=20, optimizer=optimizer, safety_net=False)
    for name, layer in so.layers.items():
        mask = layer.mask("arith")
        assert mask is not None
        block = layer.lora_B["arith"]
        assert bool((block[~mask] == 0).all()), name
        assert bool((block[mask] != 0).any()), name
        for value in optimizer.state[block].values():
            if isinstance(value, torch.Tensor) and value.shape == block.shape:
                assert bool((value[~mask] == 0).all())


def test_masked_entries_stay_zero_with_a_fresh_optimizer_and_hooks_only() -> None:
    """A trainer that forgets the grad masks is still safe: the gradient hook masks at source."""
    loaded, so = tiny_federation()
    batch = lm_batch(loaded.tokenizer, ARITH[:8])
    fed = FederationSection(
        tasks=["arith", "lang", "rev"], mask_mode="random", density=0.1, density_min=0.02
    )
    calibrate(so, "arith", mask_settings(fed))
    params = so.train_task("arith")
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    for _ in range(15):
        so.model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for layer in so.layers.values():
        mask = layer.mask("arith")
        assert mask is not None
        assert bool((layer.lora_B["arith"][~mask] == 0).all())


def test_grad_masks_cover_the_masked_blocks() -> None:
    _, so = tiny_federation()
    assert so.grad_masks("arith") == {}
    random_masks = FederationSection(tasks=["arith", "lang", "rev"], mask_mode="random")
    calibrate(so, "arith", mask_settings(random_masks))
    masks = so.grad_masks("arith")
    assert set(masks) == {layer.lora_B["arith"] for layer in so.layers.values()}
    assert all(m.dtype == torch.float32 for m in masks.values())
