"""Examples -> token ids for causal-LM training: the loss covers the answer only."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from solora_node.data.examples import Example

IGNORE_INDEX = -100  # the label value torch's cross-entropy skips


def format_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    """The model's own chat format when it has one, so instruct models see familiar input.

    Of the renderings with and without an empty system turn the shorter one wins:
    templates that inject a default system prompt (SmolLM2: ~16 tokens) would otherwise
    make every forward pass of training and evaluation pay for it; on CPU that is a
    large share of the step time.
    """
    if not getattr(tokenizer, "chat_template", None):
        return f"Q: {text}\nA: "
    user = {"role": "user", "content": text}
    renderings = [_render(tokenizer, [user])]
    # Some templates reject a system role; the user-only rendering serves them.
    with contextlib.suppress(Exception):
        renderings.append(_render(tokenizer, [{"role": "system", "content": ""}, user]))
    return min(renderings, key=len)


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return str(rendered)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # The rendered template already carries any special tokens the model expects.
    ids: list[int] = tokenizer(format_prompt(tokenizer, text), add_special_tokens=False)[
        "input_ids"
    ]
    return ids


def answer_ids(tokenizer: PreTrainedTokenizerBase, answer: str) -> list[int]:
    """Answer tokens followed by EOS, so a trained model also learns where to stop."""
    ids: list[int] = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = [*ids, int(tokenizer.eos_token_id)]
    return ids


def join_prompt_answer(prompt: list[int], answer: list[int], max_len: int) -> list[int]:
    """Prompt + answer in at most max_len tokens, dropping the oldest prompt tokens first.

    The answer is what the loss and the evaluation look at, so it is never cut; an answer
    longer than max_len is kept whole (the sequence is then longer than max_len).
    """
    keep = max(0, max_len - len(answer))
    return prompt[len(prompt) - keep :] + answer if keep < len(prompt) else prompt + answer


def encode_example(
    tokenizer: PreTrainedTokenizerBase, example: Example, max_len: int
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with labels = IGNORE_INDEX on every prompt token."""
    answer = answer_ids(tokenizer, example.output)
    input_ids = join_prompt_answer(prompt_ids(tokenizer, example.input), answer, max_len)
    n_prompt = len(input_ids) - len(answer)
    return input_ids, [IGNORE_INDEX] * n_prompt + answer


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def collate(
    encoded: Sequence[tuple[list[int], list[int]]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad (input_ids, labels) pairs into input_ids, attention_mask and labels tensors."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, labs) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(labs)] = torch.tensor(labs, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
