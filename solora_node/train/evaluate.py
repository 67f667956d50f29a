"""Evaluation, in one place: task metrics and the merged model under each gate.

Task metrics: label choice by answer likelihood, exact match of greedy generations.
Merged model (every task's expert present), as users would query it: `oracle` knows the
task (one-hot gate); `auto` routes every prompt with the training-free gate (top-1) and
answers it with the expert it picked, so a routing mistake costs accuracy exactly as it
would in `infer`. The daemon, the simulator and the demo all score through this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from solora_node.adapter import SoLoraModel
from solora_node.adapter.calibration import pooled_states, stack_codes
from solora_node.adapter.prompts import prompt_batches
from solora_node.adapter.routing import dual_basis, gate_weights
from solora_node.data.encode import IGNORE_INDEX, answer_ids, encode_example, pad_id, prompt_ids
from solora_node.data.examples import Example, TaskData

DEFAULT_MAX_LEN = 256
# Generation budget beyond the longest reference answer: room to overshoot and be wrong,
# not to ramble.
EXTRA_NEW_TOKENS = 3


class _Inference:
    """no_grad + eval mode for the duration, restoring the caller's mode afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.was_training = model.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> None:
        self.no_grad.__enter__()
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)
        self.no_grad.__exit__(None, None, None)


def _left_pad(rows: Sequence[list[int]], pad: int) -> dict[str, torch.Tensor]:
    """Left padding keeps every row's last token in the last column, where answers are."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, width - len(row) :] = 1
    # Positions count real tokens only, so padding does not shift rotary embeddings.
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}


def _by_length(rows: Sequence[list[int]], batch_size: int) -> Iterator[list[int]]:
    """Index batches of similar lengths (less padding, less wasted compute)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def answer_logprobs(
    model: nn.Module,
    encoded: Sequence[tuple[list[int], list[int]]],
    pad_token_id: int,
    batch_size: int = 16,
) -> list[tuple[float, int]]:
    """(sum of log p(answer token), number of answer tokens) for each encoded example."""
    results: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    inputs = [ids for ids, _ in encoded]
    for batch in _by_length(inputs, batch_size):
        tensors = _left_pad([inputs[i] for i in batch], pad_token_id)
        labels = _left_pad([encoded[i][1] for i in batch], IGNORE_INDEX)["input_ids"]
        scored = max(int((row != IGNORE_INDEX).sum()) for row in labels) + 1
        # Only the answer's positions need vocabulary logits, the costliest part of a pass.
        logits = model(**tensors, logits_to_keep=scored).logits.float()
        predicted = logits[:, :-1].log_softmax(dim=-1)
        target = labels[:, -(scored - 1) :]
        supervised = target != IGNORE_INDEX
        token_lp = predicted.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        token_lp = token_lp * supervised
        for row, index in enumerate(batch):
            results[index] = (float(token_lp[row].sum()), int(supervised[row].sum()))
    return results


def mean_loss(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    max_len: int = DEFAULT_MAX_LEN,
    batch_size: int = 16,
) -> float:
    """Mean cross-entropy per answer token (the training objective) over `examples`."""
    if not examples:
        return float("nan")
    encoded = [encode_example(tokenizer, ex, max_len) for ex in examples]
    with _Inference(model):
        scores = answer_logprobs(model, encoded, pad_id(tokenizer), batch_size)
    total = sum(lp for lp, _ in scores)
    count = sum(n for _, n in scores)
    return -total / max(count, 1)


def label_logprobs(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[str],
    labels: Sequence[str],
    max_len: int = DEFAULT_MAX_LEN,
    batch_size: int = 16,
) -> torch.Tensor:
    """[len(inputs), len(labels)] total log-likelihood of each label's answer tokens (+EOS).

    Each prompt runs once; every label is then scored as a short continuation of the
    prompt's key/value cache, which is cropped back before the next label. That costs
    one prompt pass plus a few tokens per label instead of a full pass per label.
    """
    label_tokens = [answer_ids(tokenizer, label) for label in labels]
    keep = max(1, max_len - max(len(t) for t in label_tokens))
    prompts = [prompt_ids(tokenizer, text)[-keep:] for text in inputs]
    scores = torch.zeros(len(prompts), len(labels))
    pad = pad_id(tokenizer)
    with _Inference(model):
        for batch in _by_length(prompts, batch_size):
            tensors = _left_pad([prompts[i] for i in batch], pad)
            out = model(**tensors, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            next_lp = out.logits[:, -1].float().log_softmax(dim=-1)
            real_len = tensors["attention_mask"].sum(dim=1, keepdim=True)
            for j, tokens in enumerate(label_tokens):
                total = next_lp[:, tokens[0]].clone()
                if len(tokens) > 1:
                    rows = len(batch)
                    fed = torch.tensor(tokens[:-1]).expand(rows, -1)
                    mask = torch.cat([tensors["attention_mask"], torch.ones_like(fed)], dim=1)
                    positions = real_len + torch.arange(len(tokens) - 1)
                    cont = model(
                        input_ids=fed,
                        attention_mask=mask,
                        position_ids=positions,
                        past_key_values=cache,
                        use_cache=True,
                    ).logits.float()
                    target = torch.tensor(tokens[1:]).expand(rows, -1).unsqueeze(-1)
                    total += cont.log_softmax(dim=-1).gather(-1, target).squeeze(-1).sum(dim=1)
                    # Negative = tokens to drop, the one form old and new transformers share.
                    cache.crop(-(len(tokens) - 1))
                scores[batch, j] = total
    return scores


def label_hits(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    labels: Sequence[str],
    max_len: int = DEFAULT_MAX_LEN,
    batch_size: int = 16,
) -> list[bool]:
    """Per example: is its answer the label with the highest total log-likelihood?"""
    if not examples:
        return []
    scores = label_logprobs(
        model, tokenizer, [ex.input for ex in examples], labels, max_len, batch_size
    )
    # argmax takes the first maximum, so ties resolve to the first (sorted) label.
    chosen = scores.argmax(dim=1).tolist()
    return [labels[c] == ex.output for c, ex in zip(chosen, examples, strict=True)]


def label_accuracy(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    labels: Sequence[str],
    max_len: int = DEFAULT_MAX_LEN,
    batch_size: int = 16,
) -> float:
    """Share of examples whose answer is the label with the highest total log-likelihood."""
    return _share(label_hits(model, tokenizer, examples, labels, max_len, batch_size))


def _share(hits: Sequence[bool]) -> float:
    return sum(hits) / len(hits) if hits else 0.0


def generate_answers(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[str],
    max_new_tokens: int,
    max_len: int = DEFAULT_MAX_LEN,
    batch_size: int = 16,
) -> list[str]:
    """Greedy completions of each prompt, decoded without special tokens."""
    prompts = [prompt_ids(tokenizer, text)[-max_len:] for text in inputs]
    answers = [""] * len(prompts)
    pad = pad_id(tokenizer)
    with _Inference(model):
        for batch in _by_length(prompts, batch_size):
            tensors = _left_pad([prompts[i] for i in batch], pad)
            del tensors["position_ids"]  # generate() derives them from the attention mask
            output = model.generate(  # type: ignore[operator]
                **tensors,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = output[:, tensors["input_ids"].shape[1] :]
            for row, index in enumerate(batch):
                answers[index] = str(tokenizer.decode(new_tokens[row], skip_special_tokens=True))
    return answers


def exact_hits(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    max_len: int = DEFAULT_MAX_LEN,
    batch_size: int = 16,
) -> list[bool]:
    """Per example: is the greedy answer the reference after stripping whitespace?"""
    if not examples:
        return []
    longest = max(len(answer_ids(tokenizer, ex.output)) for ex in examples)
    answers = generate_answers(
        model,
        tokenizer,
        [ex.input for ex in examples],
        longest + EXTRA_NEW_TOKENS,
        max_len,
        batch_size,
    )
    return [got.strip() == ex.output.strip() for got, ex in zip(answers, examples, strict=True)]


def exact_match(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    max_len: int = DEFAULT_MAX_LEN,
    batch_size: int = 16,
) -> float:
    """Share of greedy answers equal to the reference after stripping whitespace."""
    return _share(exact_hits(model, tokenizer, examples, max_len, batch_size))


def task_hits(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    task: TaskData,
    batch_size: int = 16,
    max_len: int = DEFAULT_MAX_LEN,
) -> list[bool]:
    """Per eval example of `task`: answered right? (label choice or exact match)."""
    if task.kind == "label":
        return label_hits(model, tokenizer, task.eval, task.labels, max_len, batch_size)
    return exact_hits(model, tokenizer, task.eval, max_len, batch_size)


def evaluate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    task: TaskData,
    limit: int | None = None,
    batch_size: int = 16,
    max_len: int = DEFAULT_MAX_LEN,
) -> float:
    """Accuracy in [0, 1] on the task's eval split (the first `limit` examples)."""
    if limit is not None:
        task = TaskData(task.name, task.kind, task.labels, [], task.eval[:limit])
    return _share(task_hits(model, tokenizer, task, batch_size, max_len))


def evaluate_all(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    evals: Mapping[str, TaskData],
    max_len: int = DEFAULT_MAX_LEN,
) -> dict[str, float]:
    """One adapter (whatever the model's gate/active adapter is) on every task."""
    hits = hits_all(model, tokenizer, evals, max_len)
    return {task: _share(h) for task, h in hits.items()}


def hits_all(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    evals: Mapping[str, TaskData],
    max_len: int = DEFAULT_MAX_LEN,
) -> dict[str, list[bool]]:
    """Per task, per eval example: answered right by the model as it is now?"""
    return {
        task: task_hits(model, tokenizer, data, max_len=max_len) for task, data in evals.items()
    }


@dataclass
class MergedEval:
    """Per task and per example: right under the auto gate / the oracle gate; routing."""

    hits: dict[str, list[bool]]
    oracle_hits: dict[str, list[bool]] = field(default_factory=dict)
    routed_right: dict[str, int] = field(default_factory=dict)
    routed_total: dict[str, int] = field(default_factory=dict)

    @property
    def accuracy(self) -> dict[str, float]:
        return {task: _share(h) for task, h in self.hits.items()}

    @property
    def oracle(self) -> dict[str, float]:
        return {task: _share(h) for task, h in self.oracle_hits.items()}


def subset(task: TaskData, indices: list[int]) -> TaskData:
    return TaskData(task.name, task.kind, task.labels, [], [task.eval[i] for i in indices])


def _hits_at(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    task: TaskData,
    indices: list[int],
    into: list[bool],
    max_len: int,
) -> None:
    """Score only the examples at `indices`, writing each result to its place in `into`."""
    if not indices:
        return
    scored = task_hits(model, tokenizer, subset(task, indices), max_len=max_len)
    for index, hit in zip(indices, scored, strict=True):
        into[index] = hit


def route_top1(
    so: SoLoraModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    codes: Mapping[str, Mapping[str, torch.Tensor]],
    pooled: dict[str, torch.Tensor] | None = None,
) -> list[str]:
    """Top-1 task per prompt from the codes held (tasks without a code can't be chosen:
    their expert never arrived).

    `pooled` caches each prompt's xhat across calls: it is measured on the base model
    (experts off), so it is the same for every device and round.
    """
    known = [t for t in so.tasks if t in codes]
    dual = dual_basis(stack_codes(so, codes))
    cache = {} if pooled is None else pooled
    missing = [t for t in dict.fromkeys(texts) if t not in cache]
    if missing:
        states = torch.cat([pooled_states(so, b) for b in prompt_batches(tokenizer, missing)])
        cache.update(zip(missing, states, strict=True))
    xhat = torch.stack([cache[t] for t in texts])
    weights = gate_weights(xhat, dual, top1=True)
    return [known[int(k)] for k in weights.argmax(dim=-1)]


def evaluate_merged(
    so: SoLoraModel,
    tokenizer: PreTrainedTokenizerBase,
    evals: Mapping[str, TaskData],
    codes: Mapping[str, Mapping[str, torch.Tensor]],
    pooled: dict[str, torch.Tensor] | None = None,
    max_len: int = DEFAULT_MAX_LEN,
) -> MergedEval:
    """Auto (top-1 routing) and oracle (one-hot on the true task) results per example.

    Examples routed to their own task get the same answer under both gates, so they are
    scored once; only misrouted examples are scored twice (true expert and routed one).
    """
    result = MergedEval(hits={})
    for task, data in evals.items():
        picks = route_top1(so, tokenizer, [ex.input for ex in data.eval], codes, pooled)
        auto = [False] * len(data.eval)
        so.use_task(task)
        # Under the true expert: the oracle's answer to every example, and auto's where
        # routing picked the true task.
        oracle = [False] * len(data.eval)
        _hits_at(so.model, tokenizer, data, list(range(len(data.eval))), oracle, max_len)
        right = [i for i, p in enumerate(picks) if p == task]
        for i in right:
            auto[i] = oracle[i]
        for routed in sorted({p for p in picks if p != task}):
            so.use_task(routed)
            group = [i for i, p in enumerate(picks) if p == routed]
            _hits_at(so.model, tokenizer, data, group, auto, max_len)
        result.hits[task] = auto
        result.oracle_hits[task] = oracle
        result.routed_right[task] = len(right)
        result.routed_total[task] = len(data.eval)
    return result
