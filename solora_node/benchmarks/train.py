"""`bench train`: seconds per local training step, stock PEFT LoRA vs SO-LoRA.

Same base model (two copies), batch, sequence length, threads and optimiser (AdamW on the
trainable adapter parameters), in one process. Steps alternate between the two methods so
that load from other processes hits both alike. Each thread count in --threads is measured
in turn on the same two models; min and median of the steps after warm-up are reported,
with the SO-LoRA/PEFT ratio of both (the min is the least disturbed by other load).
SO-LoRA runs its sparse phase (mask installed, masked gradients, B *= mask after the step)
with the gate one-hot on the node's task; PEFT LoRA trains A and B of rank r.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model

from solora_node.adapter import calibrate, inject
from solora_node.config import FederationSection, ModelSection
from solora_node.errors import SoloraError
from solora_node.method_settings import mask_settings, solora_config
from solora_node.model import load_base_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="default, tiny or a local HF folder")
    parser.add_argument("--cache-dir", type=Path, default=ModelSection().cache_dir)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=48)
    parser.add_argument("--steps", type=int, default=8, help="measured steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps per method")
    parser.add_argument(
        "--threads", default="1,2", help="torch thread counts, comma-separated (default 1,2)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="passes of --steps per count")


def _thread_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise SoloraError(f"--threads {text!r}: expected positive integers such as 1,2")
    return counts


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


def _batch(vocab: int, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.seq_len), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def _solora_stepper(
    args: argparse.Namespace, fed: FederationSection
) -> tuple[Callable[[], tuple[float, float]], int]:
    base = load_base_model(args.model, args.cache_dir)
    batch = _batch(int(base.model.config.vocab_size), args)
    so = inject(base.model, solora_config(fed))
    task = fed.tasks[0]
    calibrate(so, task, mask_settings(fed.model_copy(update={"mask_mode": "random"})))
    params = so.train_task(task)

    def after() -> None:
        so.enforce_masks(task)

    return _stepper(so.model, params, batch, so.grad_masks(task), after), sum(
        p.numel() for p in params
    )


def _peft_stepper(
    args: argparse.Namespace, fed: FederationSection
) -> tuple[Callable[[], tuple[float, float]], int]:
    base = load_base_model(args.model, args.cache_dir)
    batch = _batch(int(base.model.config.vocab_size), args)
    lora_config = LoraConfig(
        r=fed.rank,
        lora_alpha=int(fed.alpha),
        target_modules=list(fed.target_modules),
        lora_dropout=0.0,
        bias="none",
    )
    model = get_peft_model(base.model, lora_config)
    params = [p for p in model.parameters() if p.requires_grad]
    return _stepper(model, params, batch, {}, lambda: None), sum(p.numel() for p in params)


def _summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values)}


def solora_step_figures(args: argparse.Namespace, threads: int) -> dict[str, float]:
    """Min and median wall seconds of SO-LoRA steps alone (the yardstick of bench codec)."""
    torch.set_num_threads(threads)
    step, _ = _solora_stepper(args, FederationSection())
    walls = [step()[0] for _ in range(args.warmup + args.steps)][args.warmup :]
    return _summary(walls)


def _measure(
    steps: dict[str, Callable[[], tuple[float, float]]], args: argparse.Namespace
) -> dict[str, Any]:
    times: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    pairs: list[float] = []
    for _ in range(args.repeats):
        for index in range(args.warmup + args.steps):
            # Alternate which method goes first, so neither always follows the other's caches.
            order = list(steps.items())
            walls: dict[str, float] = {}
            for name, step in order if index % 2 == 0 else order[::-1]:
                seconds, used = step()
                walls[name] = seconds
                if index >= args.warmup:
                    times[name].append(seconds)
                    cpu[name].append(used)
            if index >= args.warmup:
                # Back-to-back pairs: their ratio cancels slow drifts of the machine's load.
                pairs.append(walls["solora"] / walls["peft_lora"])
    wall: dict[str, dict[str, float]] = {name: _summary(v) for name, v in times.items()}
    return {
        "step_seconds": wall,
        "cpu_seconds": {name: _summary(values) for name, values in cpu.items()},
        "ratio_median": wall["solora"]["median"] / wall["peft_lora"]["median"],
        "ratio_min": wall["solora"]["min"] / wall["peft_lora"]["min"],
        "ratio_paired_median": statistics.median(pairs),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = _thread_counts(args.threads)
    fed = FederationSection()
    peft_step, peft_params = _peft_stepper(args, fed)
    solora_step, solora_params = _solora_stepper(args, fed)
    by_threads = {}
    for threads in counts:
        torch.set_num_threads(threads)
        by_threads[str(threads)] = _measure({"peft_lora": peft_step, "solora": solora_step}, args)
    return {
        "benchmark": "train",
        "model": args.model,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "repeats": args.repeats,
        "trainable_params": {"peft_lora": peft_params, "solora": solora_params},
        "threads": by_threads,
    }
