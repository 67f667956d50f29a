"""Evaluating a merged model (every task's expert present) as users would query it.

`oracle`: the task is known, one-hot gate (task-aware coding). `auto`: the task is not
known; every eval prompt is routed by the training-free gate (top-1) and answered by the
expert it picked, so a routing mistake costs accuracy exactly as it would in `infer`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from solora_node.adapter import SoLoraModel, route
from solora_node.adapter.prompts import prompt_batches
from solora_node.data.examples import TaskData
from solora_node.train import evaluate


@dataclass(frozen=True)
class RoutedScore:
    accuracy: float
    routing_accuracy: float  # share of prompts routed to their own task's expert
    examples: int


def routed_choices(
    so: SoLoraModel, tokenizer: PreTrainedTokenizerBase, texts: list[str]
) -> list[str]:
    """The expert the auto gate picks (top-1) for each prompt."""
    picks: list[str] = []
    for batch in prompt_batches(tokenizer, texts):
        weights = route(so, batch)
        picks.extend(so.tasks[int(i)] for i in torch.argmax(weights, dim=-1))
    return picks


def evaluate_routed(
    so: SoLoraModel, tokenizer: PreTrainedTokenizerBase, task: TaskData, limit: int | None
) -> RoutedScore:
    examples = task.eval[:limit] if limit is not None else task.eval
    picks = routed_choices(so, tokenizer, [ex.input for ex in examples])
    correct = 0.0
    for expert in sorted(set(picks)):
        group = [ex for ex, pick in zip(examples, picks, strict=True) if pick == expert]
        so.use_task(expert)
        correct += evaluate(so.model, tokenizer, dataclasses.replace(task, eval=group)) * len(group)
    routed_right = sum(pick == task.name for pick in picks)
    n = max(1, len(examples))
    return RoutedScore(correct / n, routed_right / n, len(examples))


def evaluate_oracle(
    so: SoLoraModel, tokenizer: PreTrainedTokenizerBase, task: TaskData, limit: int | None
) -> float:
    so.use_task(task.name)
    return evaluate(so.model, tokenizer, task, limit=limit)


def evaluate_base(
    so: SoLoraModel, tokenizer: PreTrainedTokenizerBase, task: TaskData, limit: int | None
) -> float:
    so.use_base()
    return evaluate(so.model, tokenizer, task, limit=limit)
