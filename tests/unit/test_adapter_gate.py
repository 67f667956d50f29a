"""The implicit MoE forward: one-hot == single expert, merge/weights, PEFT export parity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel

from solora_node.adapter import SoLoraModel, block_tensors, export_peft, set_block_tensors
from solora_node.model import LoadedModel, tiny_model
from tests.unit.test_adapter_helpers import (
    ARITH,
    LANG,
    REV,
    TASKS,
    lm_batch,
    tiny_federation,
    train_steps,
)


@pytest.fixture(scope="module")
def trained() -> tuple[LoadedModel, SoLoraModel]:
    """Every task's block trained a little (shared by the tests: they only change the gate)."""
    loaded, so = tiny_federation()
    for task, texts in zip(TASKS, (ARITH[:8], LANG, REV), strict=True):
        train_steps(so, task, lm_batch(loaded.tokenizer, texts), steps=6)
    return loaded, so


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_one_hot_gate_equals_a_model_holding_only_that_block(
    trained: tuple[LoadedModel, SoLoraModel],
) -> None:
    loaded, so = trained
    batch = lm_batch(loaded.tokenizer, ARITH[8:12] + LANG[:2])
    for task in TASKS:
        so.use_task(task)
        merged = _logits(so.model, batch)
        # A second node that holds task's block alone (the others zero), all experts on.
        _, single = tiny_federation()
        set_block_tensors(single, task, block_tensors(so, task))
        single.use_merge()
        assert (merged - _logits(single.model, batch)).abs().max() < 1e-5
        # And the plain model with W0 + dW_t folded into the weights.
        plain = tiny_model().model
        with torch.no_grad():
            for name, delta in so.delta_weights(task).items():
                linear = plain.get_submodule(name)
                assert isinstance(linear, torch.nn.Linear)
                linear.weight += delta
        assert (merged - _logits(plain, batch)).abs().max() < 1e-5


def test_other_experts_do_change_the_output(trained: tuple[LoadedModel, SoLoraModel]) -> None:
    loaded, so = trained
    batch = lm_batch(loaded.tokenizer, ARITH[8:10])
    so.use_task("arith")
    one_hot = _logits(so.model, batch)
    so.use_merge()
    assert (one_hot - _logits(so.model, batch)).abs().max() > 1e-4


def test_weights_gate_matches_one_hot_and_per_sample_rows(
    trained: tuple[LoadedModel, SoLoraModel],
) -> None:
    loaded, so = trained
    batch = lm_batch(loaded.tokenizer, [ARITH[9], LANG[3]])
    so.use_task("arith")
    arith = _logits(so.model, batch)
    so.use_task("lang")
    lang = _logits(so.model, batch)
    so.use_weights(torch.tensor([1.0, 0.0, 0.0]))
    assert (_logits(so.model, batch) - arith).abs().max() < 1e-5
    so.use_weights(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))  # per sample
    mixed = _logits(so.model, batch)
    assert (mixed[0] - arith[0]).abs().max() < 1e-5
    assert (mixed[1] - lang[1]).abs().max() < 1e-5
    so.use_weights(torch.ones(3))
    weighted = _logits(so.model, batch)
    so.use_merge()
    assert (weighted - _logits(so.model, batch)).abs().max() < 1e-5


def test_exported_expert_loads_in_stock_peft_and_matches(
    trained: tuple[LoadedModel, SoLoraModel], tmp_path: Path
) -> None:
    loaded, so = trained
    batch = lm_batch(loaded.tokenizer, ARITH[8:12] + LANG[:2])
    for task in ("arith", "rev"):
        folder = export_peft(so, task, tmp_path / task)
        peft_model = PeftModel.from_pretrained(tiny_model().model, str(folder))
        peft_model.eval()
        so.use_task(task)
        assert (_logits(so.model, batch) - _logits(peft_model, batch)).abs().max() < 1e-5
