"""Typed, validated configuration: YAML file < environment (SOLORA_...) < CLI overrides.

Every section is a pydantic model with field descriptions, so `solora-node` can
name the bad field, the value it got and what it expects in one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from solora_node.config_sources import resolve_relative_paths, source_of
from solora_node.defaults import DEFAULT_MAX_FOREIGN_EXPERTS, FEDERATION_SEED
from solora_node.errors import SoloraError

ENV_PREFIX = "SOLORA_"
ENV_NESTING = "__"
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
TASK_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class ConfigError(SoloraError):
    """A configuration problem; str() is one line per problem, ready for the terminal."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NodeSection(_Section):
    id: str = Field("node-0", pattern=NODE_ID_PATTERN, description="unique node id")
    data_dir: Path = Field(Path("./solora-data"), description="checkpoints and state live here")
    log_json: bool = Field(False, description="one JSON object per log line")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class FederationSection(_Section):
    id: str = Field("solora-default", pattern=NODE_ID_PATTERN, description="federation id")
    seed: int = Field(
        FEDERATION_SEED, ge=0, description="shared seed of the orthogonal projections"
    )
    tasks: list[str] = Field(
        default_factory=lambda: ["arithmetic", "topic"],
        min_length=1,
        description="ordered task list; position t owns rank slots [t*r, (t+1)*r)",
    )
    rank: int = Field(8, gt=0, le=256, description="LoRA rank slots per task (r)")
    alpha: float = Field(16.0, gt=0, description="LoRA scale; updates are scaled by alpha/r")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        min_length=1,
        description="names of the linear layers that get an adapter",
    )
    density: float = Field(0.1, gt=0, le=1, description="global density budget of B (rho)")
    density_min: float = Field(0.01, gt=0, le=1, description="lowest per-layer density")
    sparsity_allocation: Literal["uniform", "magnitude", "spectral"] = Field(
        "magnitude", description="how the density budget is spread across layers"
    )
    mask_mode: Literal["calibrated", "random"] = Field(
        "calibrated", description="magnitude calibration after warm-up, or a seeded random mask"
    )
    warmup_steps: int = Field(10, ge=0, description="dense local steps before calibration")
    reset_after_calibration: bool = Field(True, description="zero B after calibrating the mask")
    wire_dtype: Literal["float32", "bfloat16", "float16", "int8"] = Field(
        "float16", description="dtype of B values on the wire"
    )
    max_foreign_experts: int | None = Field(
        DEFAULT_MAX_FOREIGN_EXPERTS,
        ge=0,
        description="other tasks' experts a node holds and relays at most (null: all)",
    )

    @field_validator("tasks")
    @classmethod
    def _tasks_unique_and_named(cls, tasks: list[str]) -> list[str]:
        for name in tasks:
            if not re.match(TASK_NAME_PATTERN, name):
                raise ValueError(f"task name {name!r} must match {TASK_NAME_PATTERN}")
        if len(set(tasks)) != len(tasks):
            raise ValueError("task names must be unique")
        return tasks

    @model_validator(mode="after")
    def _density_floor_below_budget(self) -> FederationSection:
        if self.density_min > self.density:
            raise ValueError(
                f"density_min ({self.density_min}) must not exceed density ({self.density})"
            )
        return self

    @property
    def total_rank(self) -> int:
        return self.rank * len(self.tasks)


class ModelSection(_Section):
    base: str = Field(
        "default",
        description="'default' (embedded SmolLM2-135M), 'tiny' (tests) or a local HF folder",
    )
    cache_dir: Path = Field(
        Path(os.path.expanduser("~/.cache/solora-node")),
        description="where the prepared default model is kept",
    )


class TaskSection(_Section):
    name: str = Field("arithmetic", description="this node's task; must be in federation.tasks")
    source: Literal["builtin", "jsonl"] = "builtin"
    train_file: Path | None = Field(None, description="JSONL with input/output per line")
    eval_file: Path | None = None
    shard_index: int = Field(0, ge=0, description="this node's shard of the task's train data")
    shard_count: int = Field(1, gt=0, description="nodes sharing this task's train data")
    max_train_examples: int | None = Field(None, gt=0)
    eval_examples: int = Field(64, gt=0, description="eval set size used for reporting")

    @model_validator(mode="after")
    def _files_and_shards(self) -> TaskSection:
        if self.source == "jsonl" and (self.train_file is None or self.eval_file is None):
            raise ValueError("source 'jsonl' needs train_file and eval_file")
        if self.shard_index >= self.shard_count:
            raise ValueError(
                f"shard_index ({self.shard_index}) must be below shard_count ({self.shard_count})"
            )
        return self


class TrainSection(_Section):
    steps_per_round: int = Field(5, gt=0)
    batch_size: int = Field(8, gt=0)
    # Fits the built-in tasks' prompts in the chat format (at most ~60 tokens) and typical
    # user prompts; longer examples lose their oldest prompt tokens, and are counted.
    max_seq_len: int = Field(256, ge=8, le=4096)
    # None: tied to the adapter's density, DENSE_LR / federation.density (defaults.py).
    lr: float | None = Field(None, gt=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = Field(0, ge=0)
    threads: int = Field(2, gt=0, le=256, description="torch.set_num_threads")


class TlsSection(_Section):
    ca_cert: Path | None = Field(None, description="federation CA certificate (PEM)")
    cert: Path | None = Field(None, description="this node's certificate (PEM)")
    key: Path | None = Field(None, description="this node's private key (PEM)")


class NetworkSection(_Section):
    listen_host: str = Field("0.0.0.0", description="gRPC bind address")
    port: int = Field(7070, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    advertise_host: str | None = Field(None, description="address peers should dial")
    insecure: bool = Field(False, description="plaintext gRPC; only for trusted test networks")
    tls: TlsSection = Field(default_factory=TlsSection)
    allow_node_ids: list[str] | None = Field(None, description="optional allow-list of peers")
    bootstrap_peers: list[str] = Field(default_factory=list, description="host:port to dial")
    chunk_bytes: int = Field(1 << 20, ge=1024, le=4 << 20)
    max_message_bytes: int = Field(8 << 20, ge=4096)
    max_delta_bytes: int = Field(256 << 20, ge=4096, description="largest delta accepted")
    chunk_deadline_s: float = Field(10.0, gt=0)
    exchange_deadline_s: float = Field(60.0, gt=0)
    max_streams_per_peer: int = Field(4, gt=0)
    liveness_deadline_s: float = Field(6.0, gt=0, description="peer dropped after this silence")
    health_interval_s: float = Field(2.0, gt=0)
    norm_bound: float = Field(1e4, gt=0, description="largest L2 norm of a received block")

    @field_validator("bootstrap_peers")
    @classmethod
    def _host_port(cls, peers: list[str]) -> list[str]:
        for peer in peers:
            host, sep, port = peer.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bootstrap peer {peer!r} must be HOST:PORT")
        return peers


class DiscoverySection(_Section):
    mdns: bool = Field(True, description="advertise and browse _solora._tcp.local.")
    interfaces: list[str] | Literal["all"] = Field(
        "all", description="'all' or a list of interface addresses for mDNS"
    )


class TopologySection(_Section):
    max_degree: int = Field(3, gt=0, description="degree bound inside a cluster (D)")
    bridges_per_cluster: int = Field(1, ge=0, description="bridge links per pair of clusters")
    staleness_rounds: int = Field(3, ge=0, description="ignore deltas older than this (k)")
    aggregation: Literal["mean", "median", "trimmed_mean"] = "mean"
    trim_fraction: float = Field(0.2, ge=0, lt=0.5)
    clip_norm: float | None = Field(None, gt=0, description="clip peers' blocks to this L2 norm")


class MetricsSection(_Section):
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(9100, ge=0, le=65535, description="/metrics port; 0 picks a free one")
    eval_every: int = Field(5, gt=0, description="evaluate every N rounds")


class ServingSection(_Section):
    enabled: bool = Field(False, description="OpenAI-compatible HTTP API (docs/serving.md)")
    host: str = Field("127.0.0.1", description="HTTP bind address; loopback unless set")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port; 0 picks a free one")
    max_queue: int = Field(16, gt=0, description="requests running or waiting; beyond: 429")
    max_tokens: int = Field(256, gt=0, description="largest max_tokens a request may ask for")
    default_max_tokens: int = Field(64, gt=0, description="max_tokens when a request omits it")
    router: Literal["top1", "soft"] = Field(
        "top1", description="model auto: the best expert only, or softmax weights over all"
    )


class RoundsSection(_Section):
    max_rounds: int | None = Field(None, gt=0, description="stop after this many; None = forever")
    checkpoint_keep: int = Field(2, gt=0, description="checkpoints kept on disk")
    # Pacing (solora_node.node.pacing, docs/operations.md): an edge box should not spin.
    min_interval_s: float = Field(
        2.0, ge=0, description="a round starts at least this long after the previous one"
    )
    overlap_exchange: bool = Field(
        True,
        description="exchange while the next round trains; average at the next boundary",
    )
    checkpoint_every_rounds: int | None = Field(
        10, gt=0, description="checkpoint after this many rounds (None = only by time)"
    )
    checkpoint_every_s: float | None = Field(
        60.0, gt=0, description="or after this many seconds, whichever comes first"
    )


class NodeConfig(_Section):
    node: NodeSection = Field(default_factory=NodeSection)
    federation: FederationSection = Field(default_factory=FederationSection)
    model: ModelSection = Field(default_factory=ModelSection)
    task: TaskSection = Field(default_factory=TaskSection)
    train: TrainSection = Field(default_factory=TrainSection)
    network: NetworkSection = Field(default_factory=NetworkSection)
    discovery: DiscoverySection = Field(default_factory=DiscoverySection)
    topology: TopologySection = Field(default_factory=TopologySection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    rounds: RoundsSection = Field(default_factory=RoundsSection)
    serving: ServingSection = Field(default_factory=ServingSection)
    # Only read by `solora-node topology`: a membership to plan for.
    membership: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _task_in_federation(self) -> NodeConfig:
        if self.task.name not in self.federation.tasks:
            raise ValueError(
                f"task.name {self.task.name!r} is not in federation.tasks {self.federation.tasks}"
            )
        return self

    @model_validator(mode="after")
    def _tls_files_unless_insecure(self) -> NodeConfig:
        # Checked here, not in NetworkSection, so a config without a network
        # section gets this message too: TLS is the default, never a silent fallback.
        net = self.network
        if not net.insecure:
            missing = [k for k in ("ca_cert", "cert", "key") if getattr(net.tls, k) is None]
            if missing:
                raise ValueError(
                    "TLS is on by default: set "
                    + ", ".join(f"network.tls.{k}" for k in missing)
                    + " (make them with `solora-node certs`) or set network.insecure: true"
                )
        return self


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at the parent of `loc`, to tell a typo what was meant."""
    model: Any = NodeConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None or not isinstance(field.annotation, type):
            return []
        model = field.annotation
    return list(model.model_fields) if hasattr(model, "model_fields") else []


def _format_problem(error: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in error.get("loc", ()) if p != "__root__")
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    where = loc or "config"
    if error.get("type") == "extra_forbidden":
        allowed = _allowed_fields(tuple(error.get("loc", ())))
        return f"{where}: unknown field; expected one of {', '.join(allowed)}"
    if "input" in error and error.get("type") not in ("missing",) and loc:
        shown = repr(error["input"])
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return f"{where} = {shown}: {message}"
    return f"{where}: {message}"


def validation_problems(err: ValidationError, source: str | None = None) -> list[str]:
    prefix = f"{source}: " if source else ""
    return [prefix + _format_problem(e) for e in err.errors()]


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, recursively for nested mappings (sections)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_path(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = [p for p in dotted.split(".") if p]
    node = target
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """SOLORA_TRAIN__LR=0.01 -> {"train": {"lr": 0.01}}; values are parsed as YAML scalars."""
    result: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or ENV_NESTING not in key:
            continue
        dotted = key[len(ENV_PREFIX) :].lower().replace(ENV_NESTING, ".")
        _set_path(result, dotted, _parse_scalar(raw))
    return result


def cli_overrides(assignments: Iterable[str]) -> dict[str, Any]:
    """['train.lr=0.01', 'node.id=a'] -> nested dict; a malformed item is a ConfigError."""
    result: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([f"--set {item!r}: expected SECTION.FIELD=VALUE"])
        _set_path(result, key.strip(), _parse_scalar(raw))
    return result


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        return raw


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from a Windows editor is fine
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file ({exc.strerror})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            [f"{path}: not valid YAML{where}: expected a mapping of sections"]
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError([f"{path}: top level must be a mapping of sections, got {kind}"])
    return data


def load_config(
    path: Path | None = None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> NodeConfig:
    """Merge YAML, environment and CLI overrides (in that order) and validate.

    Relative paths in the file resolve against the file's folder; a bad value is blamed
    on the layer that set it (solora_node.config_sources)."""
    data: dict[str, Any] = {}
    if path is not None:
        data = resolve_relative_paths(read_yaml(path), path.parent)
    env = env_overrides(os.environ if environ is None else environ)
    cli = cli_overrides(overrides)
    try:
        return NodeConfig.model_validate(deep_merge(deep_merge(data, env), cli))
    except ValidationError as err:
        problems = []
        for error in err.errors():
            source = source_of(error.get("loc", ()), path, env, cli)
            problems.append((f"{source}: " if source else "") + _format_problem(error))
        raise ConfigError(problems) from None
