"""Ours: orthogonal A slices, sparse B under the cluster's agreed mask, gossip inside the
task cluster, freshest foreign experts relayed, implicit MoE (auto gate) at evaluation."""

from __future__ import annotations

from collections.abc import Callable

import torch

from solora_node.adapter import (
    apply_block,
    block_tensors,
    calibrate,
    compute_codes,
    extract_block,
    inject,
    mask_record,
    reset_block,
    set_block_tensors,
)
from solora_node.adapter import masks as mask_ops
from solora_node.adapter.prompts import prompt_batches
from solora_node.adapter.tensors import decode_values
from solora_node.aggregate import Block
from solora_node.config import FederationSection
from solora_node.defaults import FEDERATION_SEED
from solora_node.method_settings import mask_settings, solora_config
from solora_node.protocol.blocks import BlockDelta, BlockVersion, MaskRecord
from solora_node.sim.exchange import Mailbox
from solora_node.sim.method import RunContext, SimMethod
from solora_node.train import LocalTrainer
from solora_node.train.evaluate import MergedEval as DeviceEval
from solora_node.train.evaluate import evaluate_merged as evaluate_solora


def federation(ctx: RunContext, tasks: tuple[str, ...]) -> FederationSection:
    c = ctx.config
    return FederationSection(
        seed=FEDERATION_SEED + c.seed,
        tasks=list(tasks),
        rank=c.rank,
        alpha=c.alpha,
        target_modules=list(c.target_modules),
        density=c.density,
        density_min=min(0.01, c.density),
        warmup_steps=c.warmup_steps,
        wire_dtype=c.wire_dtype,  # type: ignore[arg-type]
    )


class SoLoraMethod(SimMethod):
    name = "solora"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.fed = federation(ctx, ctx.config.tasks)
        self.so = inject(ctx.loaded.model, solora_config(self.fed))
        self.states: list[dict[str, torch.Tensor]] = []
        self.trainers: list[LocalTrainer] = []
        self.codes: list[dict[str, torch.Tensor]] = []
        self.records: dict[str, MaskRecord] = {}
        self.pooled: dict[str, torch.Tensor] = {}  # eval prompt -> xhat (base model)

    def setup(self) -> None:
        so, zero = self.so, None
        for device in self.devices:
            texts = [ex.input for ex in device.data.train[: self.config.code_prompts]]
            self.codes.append(compute_codes(so, prompt_batches(self.tok, texts)))
            params = so.train_task(device.task)
            reset_block(so, device.task)
            zero = block_tensors(so, device.task)
            self.trainers.append(self.device_trainer(so.model, device, params))
            self.states.append(zero)
        # Warm-up (dense), then the head (lowest node id) calibrates the cluster's mask and
        # every member trains under it (the daemon's _agree_mask with the head winning).
        for device in self.devices:
            self._load(device.index)
            self.trainers[device.index].train_steps(self.config.warmup_steps)
            self._save(device.index)
        for task in self.config.tasks:
            members = [d for d in self.devices if d.task == task]
            head = min(members, key=lambda d: d.node_id)
            self._load(head.index)
            texts = [ex.input for ex in head.data.train[:64]]
            calibrate(so, task, mask_settings(self.fed), prompt_batches(self.tok, texts))
            self._save(head.index)
            self.records[task] = mask_record(so, task)
            for device in members:
                if device is not head:
                    self._load(device.index)  # set_block_tensors enforces the new mask
                    self._save(device.index)
                params = so.train_task(task)
                self.trainers[device.index].reset_optimizer(params, so.grad_masks(task))

    def _load(self, i: int) -> None:
        task = self.devices[i].task
        self.so.train_task(task)
        set_block_tensors(self.so, task, self.states[i])

    def _save(self, i: int) -> None:
        self.states[i] = block_tensors(self.so, self.devices[i].task)

    def train_device(self, i: int) -> list[float]:
        self._load(i)
        losses = self.trainers[i].train_steps(self.config.local_steps)
        self.so.enforce_masks(self.devices[i].task)
        self._save(i)
        return losses

    def publish(self, i: int, round_: int) -> BlockDelta:
        device = self.devices[i]
        self._load(i)
        self.so.codes[device.task] = self.codes[i]
        version = BlockVersion(task=device.task, round=round_, origin=device.node_id)
        return extract_block(self.so, device.task, version, self.fed.wire_dtype)

    def shape(self, delta: BlockDelta, box: Mailbox) -> BlockDelta:
        # Codes only change with local data: they ride with the first block a receiver
        # gets from an origin, not every round.
        if delta.version.origin in box.codes_from:
            return BlockDelta(delta.version, delta.mask_id, delta.encoding, delta.layers)
        return delta

    def mask_need(self, delta: BlockDelta, box: Mailbox) -> MaskRecord | None:
        return None if delta.mask_id in box.masks else self.records[delta.task]

    def own_block(self, i: int) -> Block:
        return self.states[i]

    def set_own_block(self, i: int, block: Block) -> None:
        self.states[i] = {n: t.clone() for n, t in block.items()}

    def dense(self, delta: BlockDelta, i: int) -> Block:
        masks = self.so.masks(delta.task)
        result = {}
        for name, raw in delta.layers.items():
            block = torch.zeros(masks[name].shape, dtype=torch.float32)
            block[masks[name]] = decode_values(raw)
            result[name] = block
        return result

    def load_merged(self, i: int) -> dict[str, dict[str, torch.Tensor]]:
        """Own block + freshest foreign experts into the model; returns the codes held."""
        device, so = self.devices[i], self.so
        self._load(i)
        so.freeze()
        codes = {device.task: self.codes[i]}
        for task in self.config.tasks:
            if task == device.task:
                continue
            held = self.boxes[i].foreign.get(task)
            if held is None:
                reset_block(so, task)
                continue
            apply_block(so, held, expected_mask_id=held.mask_id)
            origin = self.devices[self._index[held.version.origin]].index
            codes[task] = self.codes[origin]
        return codes

    def evaluate_device(self, i: int) -> DeviceEval:
        codes = self.load_merged(i)
        return evaluate_solora(self.so, self.tok, self.ctx.evals, codes, self.pooled)

    def full_masks(self, i: int) -> dict[str, torch.Tensor]:
        """Device's mask in the whole B space (d_out x T*r): its task's slot, zeros elsewhere."""
        own = self.devices[i].task
        parts: dict[str, list[torch.Tensor]] = {}
        for task in self.config.tasks:
            for name, mask in self.so.masks(task).items():
                parts.setdefault(name, []).append(mask if task == own else torch.zeros_like(mask))
        return {n: torch.cat(p, dim=1) for n, p in parts.items()}

    def collision(self) -> dict[str, float]:
        return edge_collisions(self, self.full_masks)


def edge_collisions(
    method: SimMethod, masks_of: Callable[[int], dict[str, torch.Tensor]]
) -> dict[str, float]:
    """Mean |M_i ∩ M_j| / |M_i| over graph edges, split by same-task and cross-task pairs."""
    same: list[float] = []
    cross: list[float] = []
    masks = [masks_of(i) for i in range(len(method.devices))]
    for i, j in method.ctx.topology.graph.edges:
        for a, b in ((i, j), (j, i)):
            rate = mask_ops.collision_rate(masks[a], masks[b])
            (same if method.devices[a].task == method.devices[b].task else cross).append(rate)
    return {
        "same_task": float(sum(same) / len(same)) if same else float("nan"),
        "cross_task": float(sum(cross) / len(cross)) if cross else float("nan"),
    }
