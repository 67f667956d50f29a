"""What an experiment runs: devices, tasks, rounds, topology, methods; presets and files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from solora_node.errors import SoloraError
from solora_node.federation.aggregate import RULES
from solora_node.sim.poison import POISONS

# Ours first: a run stopped early has measured the most informative comparison first.
METHODS = ("solora", "lora", "hard_moe", "lori", "local")
TOPOLOGIES = ("cluster", "random", "ring", "complete")
SPLITS = ("eval", "validation")
EVAL_MODES = ("every_device", "shared")


class SimConfigError(SoloraError):
    """A sim config that cannot run; the message names the field."""


@dataclass(frozen=True)
class SimConfig:
    """One experiment. Every method runs on the same devices, shards, topology and eval sets."""

    model: str = "tiny"
    tasks: tuple[str, ...] = ("arithmetic", "topic")
    # Devices per task, in task order; devices of a task hold disjoint train shards.
    devices_per_task: tuple[int, ...] = (2, 2)
    # Folder per task name holding train.jsonl and eval.jsonl (user tasks); else built-in.
    task_dirs: dict[str, str] = field(default_factory=dict)
    rounds: int = 2
    local_steps: int = 1
    warmup_steps: int = 1
    batch_size: int = 4
    max_seq_len: int = 256  # fits typical prompts; longer ones are counted and reported
    lr: float = 2e-3
    # Per-method learning rates (method -> lr); a method not listed uses `lr`.
    lr_by_method: dict[str, float] = field(default_factory=dict)
    rank: int = 4
    alpha: float = 8.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    density: float = 0.1
    wire_dtype: str = "float16"
    topology: str = "cluster"
    max_degree: int = 3
    radius: float = 0.45  # random geometric graph (wireless stand-in)
    methods: tuple[str, ...] = METHODS
    # Extra solora runs on these topologies (the topology ablation); empty = none.
    ablation_topologies: tuple[str, ...] = ()
    eval_limit: int = 8  # eval examples per task (the same for every device and method)
    eval_every: int = 1  # rounds between intermediate evaluations (the last always runs)
    # Rounds to evaluate at (the last always runs); when set, replaces eval_every.
    eval_rounds: tuple[int, ...] = ()
    # every_device: each device scores every example (fleet mean per example);
    # shared: each task's examples are dealt round-robin over the devices, each scored
    # once, by one device (a fleet-wide sample at 1/devices of the cost).
    eval_mode: str = "every_device"
    # Also score the validation split at the last round (choosing settings on it).
    validate_at_end: bool = False
    # Examples per task held out of train for choosing settings (0 = none).
    validation_examples: int = 0
    # What is scored: the eval split, or the validation split while choosing settings.
    score_on: str = "eval"
    code_prompts: int = 16  # prompts per device for its routing code
    max_train_examples: int = 64  # per device after sharding; 0 = all
    seed: int = 0
    threads: int = 1
    # Same-task aggregation (the daemon's topology.aggregation/clip_norm/trim_fraction).
    aggregation: str = "mean"
    clip_norm: float = 0.0  # L2 bound on each neighbour block's difference to own; 0 = off
    trim_fraction: float = 0.2
    # Devices (indices in device order) whose same-task blocks arrive poisoned.
    poisoners: tuple[int, ...] = ()
    poison: str = "scaled"  # scaled | random (sim/poison.py)
    poison_scale: float = 50.0

    @property
    def device_count(self) -> int:
        return sum(self.devices_per_task)

    def lr_for(self, method: str) -> float:
        return float(self.lr_by_method.get(method, self.lr))

    def evaluates_at(self, round_: int) -> bool:
        if round_ == self.rounds:
            return True
        if self.eval_rounds:
            return round_ in self.eval_rounds
        return round_ % self.eval_every == 0

    def check(self) -> None:
        if len(self.tasks) != len(self.devices_per_task):
            raise SimConfigError("devices_per_task: expected one count per task in tasks")
        if len(set(self.tasks)) != len(self.tasks):
            raise SimConfigError("tasks: names must be unique")
        if any(n < 1 for n in self.devices_per_task):
            raise SimConfigError("devices_per_task: every task needs at least one device")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise SimConfigError(f"methods: {unknown} not in {list(METHODS)}")
        for name in (self.topology, *self.ablation_topologies):
            if name not in TOPOLOGIES:
                raise SimConfigError(f"topology: {name!r} not in {list(TOPOLOGIES)}")
        for key in ("rounds", "local_steps", "batch_size", "rank", "eval_limit", "eval_every"):
            if getattr(self, key) < 1:
                raise SimConfigError(f"{key}: expected >= 1")
        if self.lr <= 0:
            raise SimConfigError("lr: expected > 0")
        for method, lr in self.lr_by_method.items():
            if method not in METHODS:
                raise SimConfigError(f"lr_by_method: {method!r} not in {list(METHODS)}")
            if not isinstance(lr, int | float) or isinstance(lr, bool) or lr <= 0:
                raise SimConfigError(f"lr_by_method.{method}: expected a number > 0")
        bad_rounds = [r for r in self.eval_rounds if not 1 <= r <= self.rounds]
        if bad_rounds:
            raise SimConfigError(f"eval_rounds: {bad_rounds} not in 1..rounds ({self.rounds})")
        if self.validation_examples < 0:
            raise SimConfigError("validation_examples: expected >= 0")
        if self.eval_mode not in EVAL_MODES:
            raise SimConfigError(f"eval_mode: {self.eval_mode!r} not in {list(EVAL_MODES)}")
        if self.validate_at_end and self.validation_examples < 1:
            raise SimConfigError("validate_at_end: needs validation_examples >= 1")
        if self.score_on not in SPLITS:
            raise SimConfigError(f"score_on: {self.score_on!r} not in {list(SPLITS)}")
        if self.score_on == "validation" and self.validation_examples < 1:
            raise SimConfigError("score_on: 'validation' needs validation_examples >= 1")
        unknown_dirs = sorted(set(self.task_dirs) - set(self.tasks))
        if unknown_dirs:
            raise SimConfigError(
                f"task_dirs: {unknown_dirs} are not in tasks {list(self.tasks)}; "
                "expected a folder per task listed in tasks"
            )
        if not 0 < self.density <= 1:
            raise SimConfigError("density: expected in (0, 1]")
        if self.aggregation not in RULES:
            raise SimConfigError(f"aggregation: {self.aggregation!r} not in {list(RULES)}")
        if self.clip_norm < 0:
            raise SimConfigError("clip_norm: expected >= 0 (0 = no clipping)")
        if not 0 <= self.trim_fraction < 0.5:
            raise SimConfigError("trim_fraction: expected in [0, 0.5)")
        if self.poison not in POISONS:
            raise SimConfigError(f"poison: {self.poison!r} not in {list(POISONS)}")
        bad = [i for i in self.poisoners if not 0 <= i < self.device_count]
        if bad:
            raise SimConfigError(
                f"poisoners: {bad} are not device indices (0..{self.device_count - 1})"
            )


_TINY = SimConfig(ablation_topologies=("random",), max_seq_len=48)

# SmolLM2-135M, 10 devices over 4 built-in tasks, sized to fit about an hour on one
# CPU thread (torch with 2 threads on a busy 2-core box is much slower, not faster).
# Measured on a quiet core: ~1.1 s per local step (batch 4), ~20 s to score one device on
# all four eval sets (16 examples each); docs/results.md gives the run's real cost.
# `local` is left out of the preset to keep the hour; a config file can add it back.
_PAPER = SimConfig(
    model="default",
    tasks=("arithmetic", "topic", "language", "reverse"),
    devices_per_task=(3, 3, 2, 2),
    rounds=6,
    local_steps=4,
    warmup_steps=2,
    batch_size=4,
    max_seq_len=64,
    lr=2e-3,
    rank=8,
    alpha=16.0,
    max_degree=3,
    radius=0.4,
    methods=("solora", "lora", "hard_moe", "lori"),
    ablation_topologies=("random",),
    eval_limit=16,
    eval_every=3,
    code_prompts=32,
    max_train_examples=0,
    threads=1,
)

# The comparison in docs/results.md: 8 devices (2 per task), 20 rounds, settings chosen
# on validation splits, 64 scored examples per task dealt over the devices (each scored
# once), curves at rounds 5, 10 and 20. One run is ~6 min on one core; `solora-node
# study` runs the learning-rate choice and the seeds as separate processes.
_STUDY = replace(
    _PAPER,
    devices_per_task=(2, 2, 2, 2),
    rounds=20,
    local_steps=1,
    max_seq_len=128,
    methods=("solora", "lora", "hard_moe", "lori", "local"),
    eval_limit=64,
    eval_rounds=(5, 10),
    eval_mode="shared",
    validation_examples=64,
    validate_at_end=True,
)

# The study's shape on the tiny random model: for tests of the study machinery only.
_STUDY_TINY = replace(
    _STUDY,
    model="tiny",
    rounds=3,
    warmup_steps=1,
    max_seq_len=96,
    rank=4,
    alpha=8.0,
    eval_limit=8,
    eval_rounds=(1,),
    validation_examples=8,
    code_prompts=8,
    max_train_examples=32,
)

PRESETS: dict[str, SimConfig] = {
    "paper-tiny": _TINY,
    "paper": _PAPER,
    "study": _STUDY,
    "study-tiny": _STUDY_TINY,
}


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple):
            raise SimConfigError(f"{name}: expected a list")
        return tuple(value)
    if isinstance(default, bool) or not isinstance(default, int | float | str | dict):
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if not isinstance(value, type(default)):
        raise SimConfigError(f"{name}: expected {type(default).__name__}, got {value!r}")
    return value


def from_mapping(data: dict[str, Any], base: SimConfig | None = None) -> SimConfig:
    """A config from a JSON/YAML object; a `preset` key picks the defaults it overrides."""
    data = dict(data)
    preset = data.pop("preset", None)
    if base is None:
        if preset is not None and preset not in PRESETS:
            raise SimConfigError(f"preset: {preset!r} not in {sorted(PRESETS)}")
        base = PRESETS[preset] if preset else SimConfig()
    known = {f.name: getattr(base, f.name) for f in fields(SimConfig)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SimConfigError(f"unknown sim config fields {unknown}")
    updates = {k: _coerce(k, v, known[k]) for k, v in data.items()}
    config = replace(base, **updates)
    config.check()
    return config


def load_sim_config(path: Path) -> SimConfig:
    """A sim config file (YAML or JSON object)."""
    return from_mapping(read_sim_mapping(path))


def read_sim_mapping(path: Path) -> dict[str, Any]:
    """A sim config file's mapping, with task_dirs made absolute (relative folders mean:
    beside this file, docs/data.md), so it can be written elsewhere and still hold."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a UTF-8 BOM is fine
    except OSError as err:
        raise SimConfigError(f"--config {path}: cannot read ({err.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise SimConfigError(f"--config {path}: not valid YAML/JSON ({err})") from None
    if not isinstance(data, dict):
        raise SimConfigError(f"--config {path}: expected a mapping of sim fields")
    task_dirs = data.get("task_dirs")
    if isinstance(task_dirs, dict):
        data["task_dirs"] = {
            task: str((path.parent / folder).resolve()) if isinstance(folder, str) else folder
            for task, folder in task_dirs.items()
        }
    return data
