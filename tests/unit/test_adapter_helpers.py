"""Shared pieces of the adapter tests: a tiny federation and a small local training loop
(kept here so the adapter tests do not depend on the trainer package)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from solora_node.adapter import SoLoraConfig, SoLoraModel, inject
from solora_node.model import LoadedModel, tiny_model

TASKS = ("arith", "lang", "rev")
RANK = 4


def tiny_config(seed: int = 7, tasks: Sequence[str] = TASKS, rank: int = RANK) -> SoLoraConfig:
    return SoLoraConfig(
        seed=seed, tasks=tuple(tasks), rank=rank, alpha=8.0, target_modules=("q_proj", "v_proj")
    )


def tiny_federation(seed: int = 7, model_seed: int = 0) -> tuple[LoadedModel, SoLoraModel]:
    loaded = tiny_model(seed=model_seed)
    return loaded, inject(loaded.model, tiny_config(seed))


ARITH = [f"What is {a} + {b}? {a + b}" for a in range(3, 9) for b in range(2, 6)]
LANG = [
    "Bonjour, comment allez-vous aujourd'hui ?",
    "Je voudrais un café, s'il vous plaît.",
    "Où est la gare, madame ?",
    "Nous allons à la plage demain matin.",
    "Quelle heure est-il maintenant ?",
    "Il fait très beau cette semaine.",
]
REV = [f"Reverse the letters: {w} {w[::-1]}" for w in ("cat", "dog", "sun", "tree", "lamp", "bird")]


def lm_batch(tokenizer, texts: Sequence[str], max_len: int = 48) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    enc = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
    )
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": labels,
    }


def train_steps(
    so: SoLoraModel,
    task: str,
    batch: dict[str, torch.Tensor],
    steps: int,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    optimizer: torch.optim.Optimizer | None = None,
    safety_net: bool = True,
) -> torch.optim.Optimizer:
    """What a trainer does: grads of B_t only, multiplied by the grad masks, then step."""
    params = so.train_task(task)
    if optimizer is None:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    so.model.train()
    for _ in range(steps):
        loss = so.model(**batch).loss
        loss.backward()
        for param, mask in so.grad_masks(task).items():
            assert param.grad is not None
            param.grad.mul_(mask)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if safety_net:
            so.enforce_masks(task)
    so.model.eval()
    so.freeze()
    return optimizer


def test_train_steps_lowers_the_loss() -> None:
    loaded, so = tiny_federation()
    batch = lm_batch(loaded.tokenizer, ARITH[:8])
    so.use_task("arith")
    with torch.no_grad():
        before = float(so.model(**batch).loss)
    train_steps(so, "arith", batch, steps=10)
    so.use_task("arith")
    with torch.no_grad():
        after = float(so.model(**batch).loss)
    assert after < before
