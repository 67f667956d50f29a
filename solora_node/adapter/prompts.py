"""Prompt batches for routing and generation, in the same format the trainer uses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase


def format_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    """The trainer's prompt format (its chat template when the model has one)."""
    try:  # the data package owns the format; match it whenever it is installed
        from solora_node.data.encode import format_prompt as trainer_format
    except ImportError:  # pragma: no cover - the data package ships with the project
        pass
    else:
        return str(trainer_format(tokenizer, text))
    if getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        )
    return f"Q: {text}\nA: "


def prompt_batch(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_len: int = 256
) -> dict[str, torch.Tensor]:
    """Formatted, left-truncated prompts, right-padded (pooling ignores pads)."""
    rendered = [format_prompt(tokenizer, t) for t in texts]
    ids = [tokenizer(r, add_special_tokens=False)["input_ids"][-max_len:] for r in rendered]
    width = max(len(i) for i in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(ids), width), int(pad), dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention}


def prompt_batches(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 16,
    max_len: int = 256,
) -> list[dict[str, torch.Tensor]]:
    return [
        prompt_batch(tokenizer, texts[i : i + batch_size], max_len)
        for i in range(0, len(texts), batch_size)
    ]
