"""Check an export with stock tools: PEFT's logits equal SO-LoRA's one-hot output per task,
and a merged model decodes the same greedy tokens as its adapter."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from solora_node.adapter.checkpoint import LoadedCheckpoint
from solora_node.adapter.prompts import format_prompt, prompt_batch
from solora_node.export.bundle import ADAPTERS, MERGED
from solora_node.model import load_base_model

# Fixed probes: different lengths (so padding is exercised) and different kinds of input.
PROBE_PROMPTS = (
    "What is 12 + 7?",
    "Reverse the letters of 'river'.",
    "Which topic is this about: the stock market fell today",
)
GREEDY_TOKENS = 12


def load_peft_experts(
    export_dir: Path, tasks: Sequence[str], base_name: str, base_seed: int, cache_dir: Path
) -> PeftModel:
    """A fresh base model with every exported adapter loaded by name (PEFT's own loader)."""
    base = load_base_model(base_name, cache_dir, seed=base_seed)
    first, *others = tasks
    peft = PeftModel.from_pretrained(
        base.model, str(export_dir / ADAPTERS / first), adapter_name=first
    )
    for task in others:
        peft.load_adapter(str(export_dir / ADAPTERS / task), adapter_name=task)
    peft.eval()
    return peft


def logit_differences(
    loaded: LoadedCheckpoint, peft: PeftModel, tasks: Sequence[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per task over the probe prompts (fp32): max |PEFT logits - SO-LoRA one-hot logits|,
    and, to show that comparison means something, max |one-hot logits - base logits|."""
    batch = prompt_batch(loaded.base.tokenizer, PROBE_PROMPTS)
    so = loaded.so
    differences, effects = {}, {}
    with torch.no_grad():
        so.use_base()
        base = so.model(**batch).logits
        for task in tasks:
            peft.set_adapter(task)
            theirs = peft(**batch).logits
            so.use_task(task)
            ours = so.model(**batch).logits
            differences[task] = float((theirs - ours).abs().max())
            effects[task] = float((ours - base).abs().max())
    return differences, effects


def greedy_tokens(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, text: str
) -> list[int]:
    ids = tokenizer(format_prompt(tokenizer, text), add_special_tokens=False, return_tensors="pt")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        output = model.generate(  # type: ignore[operator]
            **ids, max_new_tokens=GREEDY_TOKENS, do_sample=False, pad_token_id=pad
        )
    return [int(t) for t in output[0, ids["input_ids"].shape[1] :]]


def merged_matches_adapter(peft: PeftModel, export_dir: Path, task: str) -> bool:
    """Load merged/<task> as a plain model (with its own tokenizer) and compare greedy tokens."""
    folder = export_dir / MERGED / task
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    merged = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    merged.eval()
    peft.set_adapter(task)
    return all(
        greedy_tokens(merged, tokenizer, text) == greedy_tokens(peft, tokenizer, text)
        for text in PROBE_PROMPTS
    )
