"""Evaluation: accuracies in [0, 1] that mean what they say, and losses on answers only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import nn

from solora_node.config import TrainSection
from solora_node.data import Example, TaskData, builtin_task, collate, encode_example
from solora_node.data.encode import pad_id
from solora_node.method_settings import train_settings
from solora_node.model import tiny_model
from solora_node.train import LocalTrainer, evaluate, mean_loss
from solora_node.train.evaluate import answer_logprobs, label_logprobs


@pytest.fixture(scope="module")
def tiny() -> Any:
    return tiny_model(seed=1)


class FavourToken(nn.Module):
    """Wraps a model and adds a large bonus to one token's logit everywhere."""

    def __init__(self, inner: nn.Module, token: int) -> None:
        super().__init__()
        self.inner = inner
        self.token = token

    def forward(self, **kwargs: Any) -> Any:
        out = self.inner(**kwargs)
        out.logits[..., self.token] += 50.0
        return out


def label_task(examples: Sequence[Example], labels: tuple[str, ...]) -> TaskData:
    return TaskData("t", "label", labels, train=list(examples), eval=list(examples))


@pytest.mark.parametrize("name", ["topic", "arithmetic"])
def test_accuracy_is_a_fraction_and_deterministic(tiny: Any, name: str) -> None:
    task = builtin_task(name, seed=0)
    first = evaluate(tiny.model, tiny.tokenizer, task, limit=12)
    assert 0.0 <= first <= 1.0
    assert evaluate(tiny.model, tiny.tokenizer, task, limit=12) == first


def test_one_label_is_always_right(tiny: Any) -> None:
    examples = [Example(f"q{i}", "only") for i in range(5)]
    assert evaluate(tiny.model, tiny.tokenizer, label_task(examples, ("only",))) == 1.0


def test_label_choice_follows_the_likelihood(tiny: Any) -> None:
    # Byte tokens: favouring "z" makes "zz" the likeliest answer for every prompt.
    z = tiny.tokenizer.convert_tokens_to_ids("z")
    model = FavourToken(tiny.model, z)
    labels = ("aa", "zz")
    right = [Example(f"p{i}", "zz") for i in range(4)]
    wrong = [Example(f"p{i}", "aa") for i in range(4)]
    assert evaluate(model, tiny.tokenizer, label_task(right, labels), batch_size=3) == 1.0
    assert evaluate(model, tiny.tokenizer, label_task(wrong, labels)) == 0.0
    assert evaluate(model, tiny.tokenizer, label_task(right + wrong, labels)) == 0.5


def test_cached_label_scores_equal_full_sequence_scores(tiny: Any) -> None:
    labels = ("yes", "no", "perhaps")
    inputs = ["short", "a much longer prompt here", "mid length"]
    cached = label_logprobs(tiny.model, tiny.tokenizer, inputs, labels, batch_size=2)
    encoded = [
        encode_example(tiny.tokenizer, Example(x, label), 256) for x in inputs for label in labels
    ]
    with torch.no_grad():
        full = answer_logprobs(tiny.model, encoded, pad_id(tiny.tokenizer), batch_size=4)
    expected = torch.tensor([lp for lp, _ in full]).view(len(inputs), len(labels))
    torch.testing.assert_close(cached, expected, atol=1e-4, rtol=1e-5)


def test_mean_loss_is_the_training_loss_and_ignores_padding(tiny: Any) -> None:
    examples = [Example("hi", "there"), Example("a longer question?", "ok")]
    encoded = [encode_example(tiny.tokenizer, ex, 256) for ex in examples]
    with torch.no_grad():
        single = [float(tiny.model(**collate([e], pad_id(tiny.tokenizer))).loss) for e in encoded]
    counts = [len(ex.output) + 1 for ex in examples]  # byte tokens + EOS
    expected = sum(s * c for s, c in zip(single, counts, strict=True)) / sum(counts)
    assert mean_loss(tiny.model, tiny.tokenizer, examples) == pytest.approx(expected, rel=1e-4)


def test_exact_match_after_learning_a_fixed_answer() -> None:
    loaded = tiny_model(seed=2)
    examples = [Example(f"item {i}", "ok") for i in range(16)]
    task = TaskData("t", "generate", (), train=examples, eval=examples[:8])
    assert evaluate(loaded.model, loaded.tokenizer, task) == 0.0
    params = [p for p in loaded.model.parameters()]
    cfg = train_settings(TrainSection(batch_size=8, lr=1e-2, threads=1, max_seq_len=32))
    LocalTrainer(loaded.model, loaded.tokenizer, examples, params, cfg).train_steps(40)
    assert evaluate(loaded.model, loaded.tokenizer, task) == 1.0
    assert not loaded.model.training  # evaluation restores the caller's mode
    wrong = TaskData("t", "generate", (), train=[], eval=[Example("item 1", "no")])
    assert evaluate(loaded.model, loaded.tokenizer, wrong) == 0.0
