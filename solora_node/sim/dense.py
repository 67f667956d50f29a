"""Standard LoRA adapters (PEFT): `lora` (one adapter trained by every task, dense fp32
gossip of A and B with all neighbours), `local` (the same adapter, no communication) and
`hard_moe` (one adapter per task, gossip inside the task cluster, experts relayed, the
oracle task label picks the expert at evaluation)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from solora_node.adapter.baselines import lora_delta
from solora_node.adapter.tensors import decode_values
from solora_node.data.examples import TaskData
from solora_node.federation.aggregate import Block
from solora_node.protocol.blocks import BlockDelta
from solora_node.sim.strategy import RunContext, Strategy
from solora_node.train import LocalTrainer
from solora_node.train.evaluate import MergedEval as DeviceEval
from solora_node.train.evaluate import hits_all, task_hits

SHARED = "shared"


class DenseLoraStrategy(Strategy):
    name = "lora"
    same_task_gossip = False

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        c = self.config
        lora = LoraConfig(
            r=c.rank,
            lora_alpha=int(c.alpha),
            target_modules=list(c.target_modules),
            lora_dropout=0.0,
            bias="none",
        )
        names = list(c.tasks) if self.same_task_gossip else [SHARED]
        # Every device starts from the same initial A (a shared seed, as in LoRA-DFL).
        torch.manual_seed(c.seed)
        self.peft: PeftModel = get_peft_model(ctx.loaded.model, lora, adapter_name=names[0])
        for name in names[1:]:
            self.peft.add_adapter(name, lora)
        self.slots: dict[str, dict[str, torch.nn.Parameter]] = {n: {} for n in names}
        for module_name, module in self.peft.named_modules():
            if hasattr(module, "lora_A") and isinstance(module.lora_A, torch.nn.ModuleDict):
                layer = module_name.removeprefix("base_model.model.")
                for name in names:
                    for part in ("lora_A", "lora_B"):
                        weight = getattr(module, part)[name].weight
                        assert isinstance(weight, torch.nn.Parameter)
                        self.slots[name][f"{layer}.{part}"] = weight
        self.initial = {
            n: {k: p.detach().clone() for k, p in s.items()} for n, s in self.slots.items()
        }
        self.states: list[dict[str, torch.Tensor]] = []
        self.trainers: list[LocalTrainer] = []

    def setup(self) -> None:
        for device in self.devices:
            label = self.label(device)
            self.states.append({k: v.clone() for k, v in self.initial[label].items()})
            self.peft.set_adapter(label)
            self.trainers.append(
                self.device_trainer(self.peft, device, list(self.slots[label].values()))
            )

    def _write(self, label: str, tensors: Block) -> None:
        with torch.no_grad():
            for key, param in self.slots[label].items():
                param.copy_(tensors[key].reshape(param.shape))

    def _load(self, i: int) -> None:
        label = self.label(self.devices[i])
        self.peft.set_adapter(label)
        self._write(label, self.states[i])

    def train_device(self, i: int) -> list[float]:
        self._load(i)
        losses = self.trainers[i].train_steps(self.config.local_steps)
        label = self.label(self.devices[i])
        self.states[i] = {k: p.detach().clone() for k, p in self.slots[label].items()}
        return losses

    def publish(self, i: int, round_: int, *, with_codes: bool) -> BlockDelta:
        state = self.states[i]
        layers = sorted({k.rsplit(".", 1)[0] for k in state})
        a = {n: state[f"{n}.lora_A"] for n in layers}
        b = {n: state[f"{n}.lora_B"] for n in layers}
        return lora_delta(self.version(i, round_), a, b)

    def own_block(self, i: int) -> Block:
        return self.states[i]

    def set_own_block(self, i: int, block: Block) -> None:
        self.states[i] = {n: t.clone() for n, t in block.items()}

    def dense(self, delta: BlockDelta, i: int) -> Block:
        shapes = self.initial[delta.task]
        return {k: decode_values(raw).reshape(shapes[k].shape) for k, raw in delta.layers.items()}

    def evaluate_device(
        self, i: int, foreign: Mapping[str, BlockDelta], evals: Mapping[str, TaskData]
    ) -> DeviceEval:
        self._load(i)
        return DeviceEval(hits=hits_all(self.peft, self.tok, evals, self.config.max_seq_len))


class LocalStrategy(DenseLoraStrategy):
    name = "local"
    communicates = False


class HardMoeStrategy(DenseLoraStrategy):
    name = "hard_moe"
    same_task_gossip = True

    def evaluate_device(
        self, i: int, foreign: Mapping[str, BlockDelta], evals: Mapping[str, TaskData]
    ) -> DeviceEval:
        own = self.devices[i].task
        hits: dict[str, list[bool]] = {}
        for task, data in evals.items():
            # The oracle label picks the expert: own trained one or the freshest relayed copy
            # (the untrained initial adapter, B = 0, when none reached this device).
            if task == own:
                tensors: Block = self.states[i]
            else:
                held = foreign.get(task)
                tensors = self.dense(held, i) if held is not None else self.initial[task]
            self.peft.set_adapter(task)
            self._write(task, tensors)
            hits[task] = task_hits(self.peft, self.tok, data, max_len=self.config.max_seq_len)
        return DeviceEval(hits=hits)
