"""`bench routing`: accuracy of the training-free `auto` gate on held-out prompts.

Per built-in task, the routing code mu_t is computed from its first train inputs (what a
node of that task would share); each eval input is then routed (top-1 of D^T xhat) and
counted correct when it picks its own task. Only base-model passes are needed: codes and
pooled prompt states are measured with the gate off. The nearest-code router (cosine to
mu_t, no dual basis) is reported beside it for comparison.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from solora_node.adapter import compute_codes, dual_basis, gate_weights, inject
from solora_node.adapter.calibration import pooled_states, stack_codes
from solora_node.adapter.prompts import prompt_batches
from solora_node.adapter.routing import DEFAULT_RIDGE
from solora_node.config import FederationSection, ModelSection
from solora_node.method_settings import solora_config
from solora_node.model import load_base_model

DEFAULT_TASKS = ("arithmetic", "topic", "language", "reverse")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="default, tiny or a local HF folder")
    parser.add_argument("--cache-dir", type=Path, default=ModelSection().cache_dir)
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="built-in tasks")
    parser.add_argument("--code-examples", type=int, default=64, help="train inputs per code")
    parser.add_argument("--eval-examples", type=int, default=64, help="eval inputs per task")
    parser.add_argument(
        "--ridge", type=float, default=DEFAULT_RIDGE, help="lambda of the dual basis"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=FederationSection().seed)
    parser.add_argument("--threads", type=int, default=2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from solora_node.data.tasks import builtin_task  # the data package owns the task suite

    torch.set_num_threads(args.threads)
    tasks = tuple(args.tasks)
    data = {t: builtin_task(t, args.seed) for t in tasks}
    loaded = load_base_model(args.model, args.cache_dir)
    fed = FederationSection(tasks=list(tasks), seed=args.seed)
    so = inject(loaded.model, solora_config(fed))
    tokenizer = loaded.tokenizer
    for task in tasks:
        inputs = [ex.input for ex in data[task].train[: args.code_examples]]
        so.codes[task] = compute_codes(so, prompt_batches(tokenizer, inputs, args.batch))
    codes = stack_codes(so, so.codes)
    dual = dual_basis(codes, args.ridge)
    confusion = {t: dict.fromkeys(tasks, 0) for t in tasks}
    nearest_correct = 0
    total = 0
    for index, task in enumerate(tasks):
        inputs = [ex.input for ex in data[task].eval[: args.eval_examples]]
        for batch in prompt_batches(tokenizer, inputs, args.batch):
            states = pooled_states(so, batch)
            picked = gate_weights(states, dual, top1=True).argmax(dim=-1)
            for choice in picked.tolist():
                confusion[task][tasks[choice]] += 1
            nearest_correct += int(((states @ codes.T).argmax(dim=-1) == index).sum())
            total += len(picked)
    per_task = {t: confusion[t][t] / max(1, sum(confusion[t].values())) for t in tasks}
    correct = sum(confusion[t][t] for t in tasks)
    return {
        "model": args.model,
        "tasks": list(tasks),
        "code_layers": list(so.code_layers),
        "code_examples": args.code_examples,
        "eval_examples": total,
        "ridge": args.ridge,
        "accuracy": correct / max(1, total),
        "per_task": per_task,
        "confusion": confusion,
        "nearest_code_accuracy": nearest_correct / max(1, total),
    }
