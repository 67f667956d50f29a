"""The shape every simulated method shares, and its round: train -> publish -> exchange ->
aggregate, as in the daemon's loop (DESIGN §3)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from solora_node.aggregate import Block, aggregate_blocks
from solora_node.config import TrainSection
from solora_node.data.examples import TaskData
from solora_node.method_settings import train_settings
from solora_node.model import LoadedModel
from solora_node.protocol.blocks import BlockDelta, MaskRecord
from solora_node.sim.config import SimConfig
from solora_node.sim.devices import Device
from solora_node.sim.exchange import Mailbox, exchange
from solora_node.sim.poison import poison_block
from solora_node.sim.topology import SimTopology
from solora_node.sim.wire import WireCounter
from solora_node.train import LocalTrainer
from solora_node.train.evaluate import MergedEval as DeviceEval


@dataclass
class RunContext:
    config: SimConfig
    devices: list[Device]
    topology: SimTopology
    loaded: LoadedModel
    evals: dict[str, TaskData]


def _train_section(config: SimConfig, device: Device) -> TrainSection:
    return TrainSection(
        steps_per_round=config.local_steps,
        batch_size=config.batch_size,
        max_seq_len=config.max_seq_len,
        lr=config.lr,
        seed=config.seed * 1000 + device.index,
        threads=config.threads,
    )


class SimMethod(ABC):
    """One method's adapter states for all devices, swapped into one shared base model."""

    name = ""
    communicates = True
    # Same-task gossip (cluster mixing) or with every neighbour (all mixing).
    same_task_gossip = True

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.devices = ctx.devices
        self.tok = ctx.loaded.tokenizer
        self.wire = WireCounter()
        topo = ctx.topology
        self.mixing: np.ndarray = (
            topo.cluster_mixing() if self.same_task_gossip else topo.all_mixing()
        )
        self.boxes = [Mailbox(d.node_id, self.label(d)) for d in self.devices]
        # L2 distance of every averaged-in neighbour block to the receiver's own block
        # (what clip_norm bounds), so a clean run tells an operator where to clip.
        self.neighbour_distances: list[float] = []
        self._index = {d.node_id: d.index for d in self.devices}

    def device_trainer(
        self, model: torch.nn.Module, device: Device, params: list[torch.nn.Parameter]
    ) -> LocalTrainer:
        """A device's own trainer (its shard, its seed, its optimiser) on the shared model."""
        return LocalTrainer(
            model,
            self.tok,
            device.data.train,
            params,
            train_settings(_train_section(self.config, device)),
        )

    def label(self, device: Device) -> str:
        """The block task a device trains (its task, or one adapter shared by all)."""
        return device.task if self.same_task_gossip else "shared"

    # -- per method --------------------------------------------------------------------
    @abstractmethod
    def setup(self) -> None: ...

    @abstractmethod
    def train_device(self, i: int) -> list[float]: ...

    @abstractmethod
    def publish(self, i: int, round_: int) -> BlockDelta: ...

    @abstractmethod
    def own_block(self, i: int) -> Block: ...

    @abstractmethod
    def set_own_block(self, i: int, block: Block) -> None: ...

    @abstractmethod
    def dense(self, delta: BlockDelta, i: int) -> Block: ...

    @abstractmethod
    def evaluate_device(self, i: int) -> DeviceEval: ...

    def mask_need(self, delta: BlockDelta, box: Mailbox) -> MaskRecord | None:
        return None

    def shape(self, delta: BlockDelta, box: Mailbox) -> BlockDelta:
        return delta

    def collision(self) -> dict[str, float] | None:
        return None

    # -- the round ---------------------------------------------------------------------
    def run_round(self, round_: int) -> tuple[float, int]:
        """Returns (mean train loss, bytes sent this round)."""
        losses: list[float] = []
        for i in range(len(self.devices)):
            losses += self.train_device(i)
        sent = 0
        if self.communicates:
            self.wire.forget()
            for i in range(len(self.devices)):
                self.boxes[i].own = self.publish(i, round_)
            sent = exchange(
                self.boxes, self.ctx.topology.neighbours, self.wire, self.mask_need, self.shape
            )
            for i in range(len(self.devices)):
                self._aggregate(i)
        return (float(np.mean(losses)) if losses else float("nan")), sent

    def _aggregate(self, i: int) -> None:
        """Metropolis step over the same-label blocks that came from gossip neighbours."""
        box = self.boxes[i]
        row = self.mixing[i]
        peers = [o for o in sorted(box.inbox) if row[self._index[o]] > 0 and self._index[o] != i]
        if not peers:
            return
        own = self.own_block(i)
        theirs = [self._received(box.inbox[o], i) for o in peers]
        self.neighbour_distances += [block_distance(block, own) for block in theirs]
        c = self.config
        merged = aggregate_blocks(
            own,
            theirs,
            [float(row[self._index[o]]) for o in peers],
            rule=c.aggregation,  # type: ignore[arg-type]  # checked by SimConfig.check
            trim_fraction=c.trim_fraction,
            clip_norm=c.clip_norm or None,
        )
        self.set_own_block(i, merged)
        for origin in peers:  # each neighbour block is averaged in once (node._aggregate)
            box.inbox.pop(origin, None)

    def _received(self, delta: BlockDelta, i: int) -> Block:
        """The dense block device i averages in: a poisoner's arrives poisoned."""
        block = self.dense(delta, i)
        origin = self._index[delta.version.origin]
        if origin not in self.config.poisoners:
            return block
        seed = self.config.seed * 1_000_003 + delta.version.round * 1009 + origin
        return poison_block(block, self.config.poison, self.config.poison_scale, seed)

    def own_blocks(self) -> dict[int, dict[str, torch.Tensor]]:
        return {i: dict(self.own_block(i)) for i in range(len(self.devices))}


def block_distance(a: Block, b: Block) -> float:
    """L2 norm of a - b over all layers of a block."""
    return float(sum(float((a[n] - b[n]).pow(2).sum()) for n in a) ** 0.5)
