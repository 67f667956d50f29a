"""A tiny adapter checkpoint with nonzero blocks, masks and routing codes for every task
(shared by the checkpoint, export and serving tests)."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from solora_node.adapter import calibrate, compute_codes, set_block_tensors
from solora_node.adapter.checkpoint import save_checkpoint
from solora_node.adapter.prompts import prompt_batches
from solora_node.config import FederationSection
from solora_node.method_settings import mask_settings
from tests.unit.test_adapter_helpers import TASKS, tiny_federation
from tests.unit.test_adapter_routing import routing_prompts


def write_tiny_checkpoint(folder: Path, round_: int | None = None) -> Path:
    loaded, so = tiny_federation()
    fed = FederationSection(tasks=list(TASKS), mask_mode="random", density=0.3, density_min=0.01)
    generator = torch.Generator().manual_seed(0)
    rng = random.Random(0)
    for task in TASKS:
        calibrate(so, task, mask_settings(fed))
        shapes = so.block_shapes()
        set_block_tensors(
            so, task, {n: torch.randn(s, generator=generator) for n, s in shapes.items()}
        )
        so.codes[task] = compute_codes(
            so, prompt_batches(loaded.tokenizer, routing_prompts(task, 16, rng))
        )
    return save_checkpoint(so, folder, base_model="tiny", federation_id="fed-test", round_=round_)
