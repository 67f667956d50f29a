"""The simulated devices: a task each, a disjoint shard of its train split, shared eval sets."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from solora_node.data.examples import Example, TaskData
from solora_node.data.tasks import BUILTIN_TASKS, builtin_task, jsonl_task
from solora_node.sim.config import SimConfig, SimConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    index: int
    node_id: str
    task: str
    shard: int  # position among the devices of its task
    data: TaskData  # train = this device's shard


def _task_data(config: SimConfig, task: str, shard: int, count: int) -> TaskData:
    folder = config.task_dirs.get(task)
    held = config.validation_examples
    if folder is not None:
        root = Path(folder)
        validation_file = root / "validation.jsonl"
        data = jsonl_task(
            task,
            root / "train.jsonl",
            root / "eval.jsonl",
            shard,
            count,
            validation=held,
            validation_file=validation_file if validation_file.is_file() else None,
        )
    elif task in BUILTIN_TASKS:
        data = builtin_task(task, config.seed, shard, count, validation=held)
    else:
        raise SimConfigError(
            f"tasks: {task!r} is neither a built-in task {list(BUILTIN_TASKS)} nor in "
            "task_dirs; expected a folder with train.jsonl and eval.jsonl under task_dirs"
        )
    if config.max_train_examples:
        data = TaskData(
            data.name,
            data.kind,
            data.labels,
            data.train[: config.max_train_examples],
            data.eval,
            data.validation,
        )
    return data


def build_devices(config: SimConfig) -> list[Device]:
    """Devices in task order; ids sort like their index so plans and plots agree."""
    devices: list[Device] = []
    for task, count in zip(config.tasks, config.devices_per_task, strict=True):
        for shard in range(count):
            index = len(devices)
            data = _task_data(config, task, shard, count)
            devices.append(Device(index, f"dev-{index:02d}", task, shard, data))
    return devices


def eval_sets(devices: list[Device], limit: int, split: str = "eval") -> dict[str, TaskData]:
    """Each task's first `limit` examples of `split` (eval or validation), as the eval
    list: the same for every device and every method."""
    result: dict[str, TaskData] = {}
    for device in devices:
        if device.task not in result:
            d = device.data
            examples = d.validation if split == "validation" else d.eval
            if len(examples) < limit:
                log.warning(
                    "task %s: eval_limit %d but its %s split has %d examples; scoring all %d",
                    d.name,
                    limit,
                    split,
                    len(examples),
                    len(examples),
                )
            result[device.task] = TaskData(d.name, d.kind, d.labels, [], examples[:limit])
    return result


def eval_fingerprint(examples: list[Example]) -> str:
    """Hash of an eval set, so results show that every method saw the same examples."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(ex.input.encode() + b"\0" + ex.output.encode() + b"\0")
    return digest.hexdigest()[:16]
