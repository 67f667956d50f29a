"""Accuracy of one device's merged model on every task's eval set; auto routing for SO-LoRA."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from solora_node.adapter import SoLoraModel
from solora_node.adapter.calibration import pooled_states
from solora_node.adapter.prompts import prompt_batches
from solora_node.adapter.routing import dual_basis, gate_weights
from solora_node.data.examples import TaskData
from solora_node.train import evaluate


@dataclass
class DeviceEval:
    """Per task accuracy of one device (headline gate), plus the oracle gate and routing."""

    accuracy: dict[str, float]
    oracle: dict[str, float] = field(default_factory=dict)
    routed_right: dict[str, int] = field(default_factory=dict)
    routed_total: dict[str, int] = field(default_factory=dict)


def subset(task: TaskData, indices: list[int]) -> TaskData:
    return TaskData(task.name, task.kind, task.labels, [], [task.eval[i] for i in indices])


def _accuracy_sum(so_model: torch.nn.Module, tok: PreTrainedTokenizerBase, task: TaskData) -> float:
    """Number of correct answers (accuracy x size), 0 for an empty set."""
    if not task.eval:
        return 0.0
    return evaluate(so_model, tok, task) * len(task.eval)


def route_top1(
    so: SoLoraModel,
    tok: PreTrainedTokenizerBase,
    texts: list[str],
    codes: Mapping[str, Mapping[str, torch.Tensor]],
    pooled: dict[str, torch.Tensor] | None = None,
) -> list[str]:
    """Top-1 task per prompt from the codes this device holds (tasks without a code can't
    be chosen: their expert never reached the device).

    `pooled` caches each prompt's xhat across calls: it is measured on the base model
    (experts off), so it is the same for every device and round.
    """
    known = [t for t in so.tasks if t in codes]
    rows = []
    for task in known:
        parts = [
            torch.nn.functional.normalize(codes[task][n].float(), dim=0) for n in so.code_layers
        ]
        rows.append(torch.nn.functional.normalize(torch.cat(parts), dim=0))
    dual = dual_basis(torch.stack(rows))
    cache = {} if pooled is None else pooled
    missing = [t for t in dict.fromkeys(texts) if t not in cache]
    if missing:
        states = torch.cat([pooled_states(so, b) for b in prompt_batches(tok, missing)])
        cache.update(zip(missing, states, strict=True))
    xhat = torch.stack([cache[t] for t in texts])
    weights = gate_weights(xhat, dual, top1=True)
    return [known[int(k)] for k in weights.argmax(dim=-1)]


def evaluate_solora(
    so: SoLoraModel,
    tok: PreTrainedTokenizerBase,
    evals: Mapping[str, TaskData],
    codes: Mapping[str, Mapping[str, torch.Tensor]],
    pooled: dict[str, torch.Tensor] | None = None,
) -> DeviceEval:
    """Auto (top-1 routing) and oracle (one-hot on the true task) accuracy per task.

    Examples routed to their own task get the same answer under both gates, so they are
    scored once; only misrouted examples are scored twice (true expert and routed one).
    """
    result = DeviceEval(accuracy={})
    for task, data in evals.items():
        picks = route_top1(so, tok, [ex.input for ex in data.eval], codes, pooled)
        right = [i for i, p in enumerate(picks) if p == task]
        so.use_task(task)
        shared = _accuracy_sum(so.model, tok, subset(data, right))
        wrong = [i for i, p in enumerate(picks) if p != task]
        oracle_wrong = _accuracy_sum(so.model, tok, subset(data, wrong))
        auto_wrong = 0.0
        for routed in sorted({picks[i] for i in wrong}):
            so.use_task(routed)
            group = [i for i in wrong if picks[i] == routed]
            auto_wrong += _accuracy_sum(so.model, tok, subset(data, group))
        n = len(data.eval)
        result.accuracy[task] = (shared + auto_wrong) / n
        result.oracle[task] = (shared + oracle_wrong) / n
        result.routed_right[task] = len(right)
        result.routed_total[task] = n
    return result


def evaluate_all(
    model: torch.nn.Module, tok: PreTrainedTokenizerBase, evals: Mapping[str, TaskData]
) -> dict[str, float]:
    """One adapter (whatever the model's gate/active adapter is) on every task."""
    return {task: evaluate(model, tok, data) for task, data in evals.items()}
