"""`bench train`: seconds per local training step, stock PEFT LoRA vs SO-LoRA.

Same base model (two copies), batch, sequence length, threads and optimiser (AdamW on the
trainable adapter parameters), in one process. Steps alternate between the two methods so
that load from other processes hits both alike; medians of the steps after warm-up.
SO-LoRA runs its sparse phase (mask installed, masked gradients, B *= mask after the step)
with the gate one-hot on the node's task; PEFT LoRA trains A and B of rank r.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model

from solora_node.adapter import calibrate, inject
from solora_node.config import FederationSection, ModelSection
from solora_node.method_settings import mask_settings, solora_config
from solora_node.model import load_base_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="default, tiny or a local HF folder")
    parser.add_argument("--cache-dir", type=Path, default=ModelSection().cache_dir)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=48)
    parser.add_argument("--steps", type=int, default=8, help="measured steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps per method")
    parser.add_argument("--threads", type=int, default=2)


def _stepper(
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    batch: dict[str, torch.Tensor],
    grad_masks: dict[torch.nn.Parameter, torch.Tensor],
    after: Callable[[], None],
) -> Callable[[], tuple[float, float]]:
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> tuple[float, float]:
        model.train()
        start, cpu_start = time.perf_counter(), time.process_time()
        model(**batch).loss.backward()
        for param, mask in grad_masks.items():  # what the trainer does with grad masks
            if param.grad is not None:
                param.grad.mul_(mask)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        after()
        return time.perf_counter() - start, time.process_time() - cpu_start

    return step


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    fed = FederationSection()
    peft_base = load_base_model(args.model, args.cache_dir)
    solora_base = load_base_model(args.model, args.cache_dir)
    vocab = int(peft_base.model.config.vocab_size)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.seq_len), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    lora_config = LoraConfig(
        r=fed.rank,
        lora_alpha=int(fed.alpha),
        target_modules=list(fed.target_modules),
        lora_dropout=0.0,
        bias="none",
    )
    peft_model = get_peft_model(peft_base.model, lora_config)
    peft_params = [p for p in peft_model.parameters() if p.requires_grad]
    peft_step = _stepper(peft_model, peft_params, batch, {}, lambda: None)

    so = inject(solora_base.model, solora_config(fed))
    task = fed.tasks[0]
    calibrate(so, task, mask_settings(fed.model_copy(update={"mask_mode": "random"})))
    solora_params = so.train_task(task)

    def solora_after() -> None:
        so.enforce_masks(task)

    solora_step = _stepper(so.model, solora_params, batch, so.grad_masks(task), solora_after)
    times: dict[str, list[float]] = {"peft_lora": [], "solora": []}
    cpu: dict[str, list[float]] = {"peft_lora": [], "solora": []}
    for index in range(args.warmup + args.steps):
        # Alternate which method goes first, so neither always follows the other's caches.
        order = [("peft_lora", peft_step), ("solora", solora_step)]
        for name, step in order if index % 2 == 0 else order[::-1]:
            wall, used = step()
            if index >= args.warmup:
                times[name].append(wall)
                cpu[name].append(used)
    medians = {name: statistics.median(values) for name, values in times.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    # Pairs ran back to back, so their ratio cancels slow drifts of the machine's load.
    pairs = [s / p for s, p in zip(times["solora"], times["peft_lora"], strict=True)]
    return {
        "model": args.model,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "threads": args.threads,
        "steps": args.steps,
        "trainable_params": {
            "peft_lora": sum(p.numel() for p in peft_params),
            "solora": sum(p.numel() for p in solora_params),
        },
        "step_seconds": medians,
        "all_step_seconds": times,
        "ratio": medians["solora"] / medians["peft_lora"],
        "ratio_paired_median": statistics.median(pairs),
        "cpu_seconds": cpu_medians,
    }
