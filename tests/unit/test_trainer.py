"""LocalTrainer on the tiny model: it learns, masks hold exactly, runs are reproducible."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from solora_node.config import TrainSection
from solora_node.data import Example
from solora_node.method_settings import train_settings
from solora_node.model import LoadedModel, tiny_model
from solora_node.train import LocalTrainer, TrainStateError, mean_loss

EXAMPLES = [Example(f"colour {i}?", ["red", "blue"][i % 2]) for i in range(24)]
CFG = train_settings(TrainSection(batch_size=4, lr=1e-2, threads=1, max_seq_len=32, seed=7))


def frozen_tiny(seed: int = 0) -> tuple[LoadedModel, list[nn.Parameter]]:
    """The tiny model with only the attention value/output projections and embeddings trainable.

    The (tied) embeddings are included because they are tiny at initialisation: frozen,
    they cap the logits so low that the loss cannot fall far in a few steps.
    """
    loaded = tiny_model(seed=seed)
    for param in loaded.model.parameters():
        param.requires_grad_(False)
    params = [
        proj.weight
        for layer in loaded.model.model.layers
        for proj in (layer.self_attn.v_proj, layer.self_attn.o_proj)
    ]
    params.append(loaded.model.model.embed_tokens.weight)
    return loaded, params


def test_training_lowers_the_loss_and_touches_only_params() -> None:
    loaded, params = frozen_tiny()
    trained = {id(p) for p in params}
    others = {n: p.clone() for n, p in loaded.model.named_parameters() if id(p) not in trained}
    before = mean_loss(loaded.model, loaded.tokenizer, EXAMPLES)
    trainer = LocalTrainer(loaded.model, loaded.tokenizer, EXAMPLES, params, CFG)
    losses = trainer.train_steps(30)
    after = mean_loss(loaded.model, loaded.tokenizer, EXAMPLES)
    assert len(losses) == 30 and trainer.step == 30
    assert after < 0.5 * before
    for name, param in loaded.model.named_parameters():
        if name in others:
            assert torch.equal(param, others[name]), name


def test_masked_entries_never_move_even_with_weight_decay() -> None:
    loaded, params = frozen_tiny()
    generator = torch.Generator().manual_seed(0)
    masks = {p: torch.rand(p.shape, generator=generator) < 0.2 for p in params[:2]}
    initial = [p.detach().clone() for p in params]
    cfg = dataclasses.replace(CFG, weight_decay=0.1)
    trainer = LocalTrainer(loaded.model, loaded.tokenizer, EXAMPLES, params, cfg, masks)
    trainer.train_steps(5)
    for param, start in zip(params[:2], initial, strict=False):
        keep = masks[param]
        assert torch.equal(param[~keep], start[~keep])
        assert (param[keep] != start[keep]).float().mean() > 0.9
        state = trainer.optimizer.state[param]
        assert not state["exp_avg"][~keep].any() and not state["exp_avg_sq"][~keep].any()
    # Unmasked parameters train densely.
    assert (params[2] != initial[2]).float().mean() > 0.9


def test_bad_masks_are_refused() -> None:
    loaded, params = frozen_tiny()
    stranger = nn.Parameter(torch.zeros(3))
    with pytest.raises(Exception, match="not trained"):
        LocalTrainer(loaded.model, loaded.tokenizer, EXAMPLES, params, CFG, {stranger: stranger})
    with pytest.raises(Exception, match="shape"):
        LocalTrainer(
            loaded.model, loaded.tokenizer, EXAMPLES, params, CFG, {params[0]: torch.ones(2)}
        )


def run(steps: list[int], seed: int = 7) -> tuple[list[float], list[torch.Tensor]]:
    loaded, params = frozen_tiny()
    cfg = dataclasses.replace(CFG, seed=seed)
    trainer = LocalTrainer(loaded.model, loaded.tokenizer, EXAMPLES, params, cfg)
    losses = [loss for n in steps for loss in trainer.train_steps(n)]
    return losses, [p.detach().clone() for p in params]


def test_seeded_runs_are_reproducible_and_continue_across_calls() -> None:
    losses, weights = run([6])
    split_losses, split_weights = run([2, 3, 1])
    assert losses == split_losses
    assert all(torch.equal(a, b) for a, b in zip(weights, split_weights, strict=True))
    other_losses, _ = run([6], seed=8)
    assert other_losses != losses


def test_exported_state_resumes_exactly_through_safetensors_and_json() -> None:
    loaded, params = frozen_tiny()
    trainer = LocalTrainer(loaded.model, loaded.tokenizer, EXAMPLES, params, CFG)
    trainer.train_steps(5)
    tensors, meta = trainer.export_state()
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    blob, text = save_tensors(tensors), json.dumps(meta)
    snapshot = [p.detach().clone() for p in params]
    expected = trainer.train_steps(4)

    resumed, resumed_params = frozen_tiny()
    with torch.no_grad():
        for param, value in zip(resumed_params, snapshot, strict=True):
            param.copy_(value)
    other = LocalTrainer(resumed.model, resumed.tokenizer, EXAMPLES, resumed_params, CFG)
    other.import_state(load_tensors(blob), json.loads(text))
    assert other.step == 5
    assert other.train_steps(4) == expected

    flat = trainer.state_dict()
    other.load_state_dict(flat)
    assert other.step == trainer.step == 9


def test_state_for_other_params_is_refused() -> None:
    loaded, params = frozen_tiny()
    trainer = LocalTrainer(loaded.model, loaded.tokenizer, EXAMPLES, params, CFG)
    trainer.train_steps(1)
    tensors, meta = trainer.export_state()
    small = LocalTrainer(loaded.model, loaded.tokenizer, EXAMPLES, params[:1], CFG)
    with pytest.raises(TrainStateError, match="param_count"):
        small.import_state(tensors, meta)
    tensors["optimizer.0.exp_avg"] = torch.zeros(2, 2)
    with pytest.raises(TrainStateError, match="shape"):
        trainer.import_state(tensors, meta)


def test_reset_optimizer_applies_a_new_mask() -> None:
    loaded, params = frozen_tiny()
    trainer = LocalTrainer(loaded.model, loaded.tokenizer, EXAMPLES, params, CFG)
    trainer.train_steps(2)
    mask = torch.zeros_like(params[0], dtype=torch.bool)
    mask[0, :4] = True
    trainer.reset_optimizer(params[:1], {params[0]: mask})
    start = params[0].detach().clone()
    trainer.train_steps(2)
    assert torch.equal(params[0][~mask], start[~mask])
    assert not torch.equal(params[0][mask], start[mask])
    assert trainer.step == 4
