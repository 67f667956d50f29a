"""Answering a prompt with the implicit mixture of experts (used by `solora-node infer`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from solora_node.adapter.errors import UnknownTaskError
from solora_node.adapter.model import SoLoraModel
from solora_node.adapter.prompts import prompt_batch
from solora_node.adapter.routing import DEFAULT_BETA, route

GATE_CHOICES = ("auto", "merge", "base")  # besides task names


@dataclass
class Answer:
    text: str
    gate: dict[str, object]
    routing: dict[str, float] = field(default_factory=dict)  # auto only: weight per task


def check_gate_choice(tasks: tuple[str, ...], choice: str) -> None:
    if choice not in tasks and choice not in GATE_CHOICES:
        raise UnknownTaskError(
            f"--task {choice!r}: expected one of the checkpoint's tasks {list(tasks)} "
            f"or {', '.join(GATE_CHOICES)}"
        )


def set_gate(
    so: SoLoraModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    choice: str,
    router: Literal["top1", "soft"] = "top1",
    beta: float = DEFAULT_BETA,
) -> dict[str, float]:
    """Put the gate in the mode `choice` names; for auto, return the routing weights."""
    check_gate_choice(so.tasks, choice)
    if choice == "merge":
        so.use_merge()
    elif choice == "base":
        so.use_base()
    elif choice != "auto":
        so.use_task(choice)
    else:
        weights = route(so, prompt_batch(tokenizer, [text]), beta=beta)[0]
        if router == "top1":
            so.use_task(so.tasks[int(weights.argmax())])
        else:
            so.use_weights(weights)
        return {t: float(w) for t, w in zip(so.tasks, weights, strict=True)}
    return {}


def answer(
    so: SoLoraModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    choice: str = "auto",
    router: Literal["top1", "soft"] = "top1",
    beta: float = DEFAULT_BETA,
    max_new_tokens: int = 32,
) -> Answer:
    """Greedy generation in the trainer's prompt format, with the gate `choice` asks for."""
    routing = set_gate(so, tokenizer, text, choice, router, beta)
    batch = prompt_batch(tokenizer, [text])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    so.model.eval()
    with torch.no_grad():
        output = so.model.generate(  # type: ignore[operator]
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    new_tokens = output[0, batch["input_ids"].shape[1] :]
    generated = str(tokenizer.decode(new_tokens, skip_special_tokens=True)).strip()
    return Answer(text=generated, gate=so.gate.describe(), routing=routing)
