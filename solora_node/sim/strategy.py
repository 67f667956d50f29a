"""What a simulated method plugs into the shared round: per device, how to train, encode,
decode and store its block, and how to score it (docs/results.md).

A strategy knows no transport and no ledger rules: sim.federation drives every method
through the same ledgers, in-memory transport and round step (federation.round) as
the daemon. The baselines differ only in what they train and put on the wire, and in
`mask_agreement` / `same_task_gossip`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from solora_node.config import TrainSection
from solora_node.data.examples import TaskData
from solora_node.federation.aggregate import Block
from solora_node.method_settings import train_settings
from solora_node.model import LoadedModel
from solora_node.protocol.blocks import BlockDelta, BlockVersion, MaskRecord
from solora_node.sim.config import SimConfig
from solora_node.sim.devices import Device
from solora_node.sim.topology import SimTopology
from solora_node.train import LocalTrainer
from solora_node.train.evaluate import MergedEval as DeviceEval


@dataclass
class RunContext:
    config: SimConfig
    devices: list[Device]
    topology: SimTopology
    loaded: LoadedModel
    evals: dict[str, TaskData]


def _train_section(config: SimConfig, device: Device, method: str) -> TrainSection:
    return TrainSection(
        steps_per_round=config.local_steps,
        batch_size=config.batch_size,
        max_seq_len=config.max_seq_len,
        lr=config.lr_for(method),
        seed=config.seed * 1000 + device.index,
        threads=config.threads,
    )


class Strategy(ABC):
    """One method's adapter states for all devices, swapped into one shared base model."""

    name = ""
    communicates = True
    # Same-task gossip (cluster mixing) or with every neighbour (all mixing).
    same_task_gossip = True
    # Devices of a task agree on one mask (the cluster head's) before sparse training.
    mask_agreement = False

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.devices = ctx.devices
        self.tok = ctx.loaded.tokenizer
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
            train_settings(_train_section(self.config, device, self.name)),
        )

    def label(self, device: Device) -> str:
        """The block task a device trains (its task, or one adapter shared by all)."""
        return device.task if self.same_task_gossip else "shared"

    def version(self, i: int, round_: int) -> BlockVersion:
        device = self.devices[i]
        return BlockVersion(task=self.label(device), round=round_, origin=device.node_id)

    def index(self, node_id: str) -> int:
        return self._index[node_id]

    # -- per method --------------------------------------------------------------------
    @abstractmethod
    def setup(self) -> None:
        """Adapters, trainers and the dense warm-up of every device."""

    @abstractmethod
    def train_device(self, i: int) -> list[float]: ...

    @abstractmethod
    def publish(self, i: int, round_: int, *, with_codes: bool) -> BlockDelta:
        """Device i's block as the wire payload of `round_`."""

    def mask(self, i: int) -> MaskRecord | None:
        """The mask device i's block is sent under (None: dense, no mask)."""
        return None

    def calibrate(self, i: int) -> MaskRecord:
        """Make device i's own mask after warm-up (strategies with mask_agreement)."""
        raise NotImplementedError(f"{self.name} has no mask agreement")

    def adopt_mask(self, i: int, record: MaskRecord) -> None:
        """Device i trains under `record` from now on."""
        raise NotImplementedError(f"{self.name} has no mask agreement")

    @abstractmethod
    def own_block(self, i: int) -> Block: ...

    @abstractmethod
    def set_own_block(self, i: int, block: Block) -> None: ...

    @abstractmethod
    def dense(self, delta: BlockDelta, i: int) -> Block:
        """A neighbour's block as device i averages it in (own_block's layout)."""

    @abstractmethod
    def evaluate_device(
        self, i: int, foreign: Mapping[str, BlockDelta], evals: Mapping[str, TaskData]
    ) -> DeviceEval:
        """Device i's results on `evals`, with the foreign experts its ledger holds."""

    def collision(self) -> dict[str, float] | None:
        return None

    def own_blocks(self) -> dict[int, dict[str, torch.Tensor]]:
        return {i: dict(self.own_block(i)) for i in range(len(self.devices))}


def block_distance(a: Block, b: Block) -> float:
    """L2 norm of a - b over all layers of a block."""
    return float(sum(float((a[n] - b[n]).pow(2).sum()) for n in a) ** 0.5)
