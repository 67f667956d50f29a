"""An experiment: every method (and the topology ablation) over the same devices, shards,
eval sets and rounds; results as one JSON-friendly dict."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from solora_node.data.examples import TaskData
from solora_node.data.tasks import kind_reason, truncated
from solora_node.model import load_base_model
from solora_node.sim.config import SimConfig, SimConfigError
from solora_node.sim.dense import DenseLoraStrategy, HardMoeStrategy, LocalStrategy
from solora_node.sim.devices import Device, build_devices, eval_fingerprint, eval_sets
from solora_node.sim.lori import LoriStrategy
from solora_node.sim.rounds import SimFederation
from solora_node.sim.solora import SoLoraStrategy
from solora_node.sim.strategy import RunContext, Strategy
from solora_node.sim.topology import SimTopology, build_topology, task_consensus
from solora_node.train.evaluate import MergedEval, hits_all, subset
from solora_node.train.evaluate import MergedEval as DeviceEval

log = logging.getLogger(__name__)

STRATEGIES: dict[str, type[Strategy]] = {
    "lora": DenseLoraStrategy,
    "lori": LoriStrategy,
    "solora": SoLoraStrategy,
    "hard_moe": HardMoeStrategy,
    "local": LocalStrategy,
}


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def per_example(hits: list[list[bool]]) -> list[float]:
    """Per example, the share of scored devices that answered it right."""
    return [float(np.mean(column)) for column in zip(*hits, strict=True)] if hits else []


def summarise(evals: list[DeviceEval], tasks: tuple[str, ...]) -> dict[str, Any]:
    """Per task: mean over devices; average: mean over tasks. Per example results are
    kept (mean over devices) so intervals can be drawn over examples and seeds."""
    examples = {t: per_example([e.hits[t] for e in evals]) for t in tasks}
    per_task = {t: _mean(v) for t, v in examples.items()}
    out: dict[str, Any] = {
        "avg_accuracy": _mean(list(per_task.values())),
        "per_task": per_task,
        "per_example": examples,
    }
    if evals and evals[0].oracle_hits:
        oracle_examples = {t: per_example([e.oracle_hits[t] for e in evals]) for t in tasks}
        oracle = {t: _mean(v) for t, v in oracle_examples.items()}
        out["per_task_oracle"] = oracle
        out["avg_accuracy_oracle"] = _mean(list(oracle.values()))
        out["per_example_oracle"] = oracle_examples
        right = sum(sum(e.routed_right.values()) for e in evals)
        total = sum(sum(e.routed_total.values()) for e in evals)
        out["routing_accuracy"] = right / total if total else float("nan")
        out["routing_per_task"] = {
            t: sum(e.routed_right[t] for e in evals) / sum(e.routed_total[t] for e in evals)
            for t in tasks
        }
    return out


def score_round(
    sim: SimFederation, config: SimConfig, evals: dict[str, TaskData]
) -> dict[str, Any]:
    """Every device's (or, shared, each example's one device's) results, summarised."""
    count = len(sim.ledgers)
    if config.eval_mode == "every_device":
        device_evals = [sim.evaluate(i, evals) for i in range(count)]
        out = summarise(device_evals, config.tasks)
        # Per device (device order), for readers who exclude some (e.g. poisoners).
        out["device_accuracy"] = [e.accuracy for e in device_evals]
        return out
    # Shared: device i scores examples i, i + count, ... of each task; the pieces are put
    # back in example order, so per_example lines up with the eval set as before.
    pieces = [
        sim.evaluate(
            i, {t: subset(d, list(range(i, len(d.eval), count))) for t, d in evals.items()}
        )
        for i in range(count)
    ]
    merged = MergedEval(hits={})
    for task, data in evals.items():
        for field_name in ("hits", "oracle_hits"):
            if not getattr(pieces[0], field_name):
                continue
            whole = [False] * len(data.eval)
            for i, piece in enumerate(pieces):
                whole[i::count] = getattr(piece, field_name)[task]
            getattr(merged, field_name)[task] = whole
        merged.routed_right[task] = sum(p.routed_right.get(task, 0) for p in pieces)
        merged.routed_total[task] = sum(p.routed_total.get(task, 0) for p in pieces)
    return summarise([merged], config.tasks)


def run_method(
    name: str,
    config: SimConfig,
    devices: list[Device],
    topology: SimTopology,
    evals: dict[str, Any],
    cache_dir: Path,
    validation: dict[str, TaskData] | None = None,
) -> dict[str, Any]:
    started = time.monotonic()
    loaded = load_base_model(config.model, cache_dir, seed=config.seed)
    torch.manual_seed(config.seed)
    strategy = STRATEGIES[name](RunContext(config, devices, topology, loaded, evals))
    sim = SimFederation(strategy, topology, config)
    sim.start()
    labels = tuple(strategy.label(d) for d in devices)
    rounds: list[dict[str, Any]] = []
    cumulative = 0
    for round_ in range(1, config.rounds + 1):
        outcome = sim.run_round(round_)
        sent = outcome.traffic.bytes
        cumulative += sent
        entry: dict[str, Any] = {
            "round": round_,
            "train_loss": _mean(outcome.losses),
            "bytes": sent,
            "bytes_cumulative": cumulative,
            "messages": outcome.traffic.messages,
            "consensus_distance": task_consensus(strategy.own_blocks(), labels),
        }
        if config.evaluates_at(round_):
            entry.update(score_round(sim, config, evals))
        if round_ == config.rounds and validation is not None:
            scored = score_round(sim, config, validation)
            entry["validation"] = {
                k: scored[k]
                for k in ("avg_accuracy", "per_task", "avg_accuracy_oracle")
                if k in scored
            }
        rounds.append(entry)
        log.info(
            "%s/%s round %d: loss %.3f, %d bytes%s",
            name,
            topology.kind,
            round_,
            entry["train_loss"],
            sent,
            f", avg acc {entry['avg_accuracy']:.3f}" if "avg_accuracy" in entry else "",
        )
    final = rounds[-1]
    result: dict[str, Any] = {
        "method": name,
        "topology": topology.kind,
        "lr": config.lr_for(name),
        "rounds": rounds,
        "bytes_total": cumulative,
        "mask_bytes": sim.traffic.mask_bytes,
        "messages": sim.traffic.messages,
        "seconds": time.monotonic() - started,
        "consensus_final": final["consensus_distance"],
        "neighbour_distance": {
            "median": float(np.median(sim.neighbour_distances or [np.nan])),
            "max": float(np.max(sim.neighbour_distances or [np.nan])),
        },
        "cluster_stats": topology.cluster_stats(),
        # What this run was scored on, so a reader can check every method saw the same sets.
        "eval_sets": {t: eval_fingerprint(d.eval) for t, d in evals.items()},
    }
    for key in (
        "device_accuracy",
        "validation",
        "avg_accuracy",
        "per_task",
        "per_example",
        "avg_accuracy_oracle",
        "per_task_oracle",
        "per_example_oracle",
        "routing_accuracy",
        "routing_per_task",
    ):
        if key in final:
            result[key] = final[key]
    collision = strategy.collision()
    if collision is not None:
        result["collision_rate"] = collision
    return result


def topology_json(topology: SimTopology, devices: list[Device]) -> dict[str, Any]:
    return {
        "kind": topology.kind,
        "nodes": [{"id": d.node_id, "task": d.task} for d in devices],
        "edges": [list(e) for e in topology.graph.edges],
        "positions": None if topology.positions is None else topology.positions.tolist(),
        "clusters": topology.cluster_stats(),
    }


def run_key(method: str, topology: str, config: SimConfig) -> str:
    """A run's name in results: the method, or method@topology for the ablation."""
    return method if topology == config.topology else f"{method}@{topology}"


def task_report(
    config: SimConfig, devices: list[Device], evals: dict[str, Any], tokenizer: Any
) -> dict[str, Any]:
    """Per task: its kind and why, split sizes, and how many examples max_seq_len cuts."""
    report: dict[str, Any] = {}
    for task in config.tasks:
        mine = [d for d in devices if d.task == task]
        data = mine[0].data
        train = [ex for d in mine for ex in d.data.train]
        report[task] = {
            "kind": data.kind,
            "why": kind_reason(data, task in config.task_dirs),
            "labels": list(data.labels),
            "train_examples": len(train),
            "validation_examples": len(data.validation),
            "scored_examples": len(evals[task].eval),
            "scored_split": config.score_on,
            "truncated_train": truncated(tokenizer, train, config.max_seq_len),
            "truncated_scored": truncated(tokenizer, evals[task].eval, config.max_seq_len),
        }
        info = report[task]
        log.info(
            "task %s: %s (%s); %d train, %d validation, %d scored (%s)",
            task,
            info["kind"],
            info["why"],
            info["train_examples"],
            info["validation_examples"],
            info["scored_examples"],
            config.score_on,
        )
        if info["truncated_train"] or info["truncated_scored"]:
            log.warning(
                "task %s: %d train and %d scored examples exceed max_seq_len %d tokens; "
                "their oldest prompt tokens are dropped (training and scoring alike)",
                task,
                info["truncated_train"],
                info["truncated_scored"],
                config.max_seq_len,
            )
    return report


def run_experiment(
    config: SimConfig,
    cache_dir: Path,
    preset: str | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    previous: dict[str, Any] | None = None,
    base_cache: Path | None = None,
) -> dict[str, Any]:
    """Run every configured method and the topology ablation; returns results.json's object.

    `on_progress` gets the partial results after each method run, so a long run that is
    stopped early still leaves what it measured; `previous` (such partial results of the
    same config) skips the runs it already holds. `base_cache` keeps the base model's
    results (the same for every run of one model, seed and eval set) across processes.
    """
    progress = on_progress or (lambda results: None)
    config.check()
    torch.set_num_threads(config.threads)
    started = time.monotonic()
    devices = build_devices(config)
    evals = eval_sets(devices, config.eval_limit, config.score_on)
    validation = (
        eval_sets(devices, config.eval_limit, "validation") if config.validate_at_end else None
    )
    main_topology = build_topology(config.topology, devices, config)
    base = load_base_model(config.model, cache_dir, seed=config.seed)
    tasks_info = task_report(config, devices, evals, base.tokenizer)
    base_hits = _base_hits(config, base, evals, base_cache)
    del base
    base_accuracy = {t: _mean([float(h) for h in hits]) for t, hits in base_hits.items()}
    results: dict[str, Any] = {
        "preset": preset,
        "seed": config.seed,
        "config": dataclasses.asdict(config),
        "tasks": tasks_info,
        "devices": [
            {"id": d.node_id, "task": d.task, "shard": d.shard, "train_examples": len(d.data.train)}
            for d in devices
        ],
        "eval_sets": {
            t: {"size": len(d.eval), "fingerprint": eval_fingerprint(d.eval)}
            for t, d in evals.items()
        },
        "base_accuracy": {
            "per_task": base_accuracy,
            "avg_accuracy": _mean(list(base_accuracy.values())),
            "per_example": {t: [float(h) for h in hits] for t, hits in base_hits.items()},
        },
        "topology": topology_json(main_topology, devices),
        "methods": {},
        "ablation": {},
    }
    done = _reusable(previous, results)
    runs = [(name, main_topology) for name in config.methods]
    for kind in config.ablation_topologies:
        if kind != config.topology:
            runs.append(("solora", build_topology(kind, devices, config)))
    for name, topology in runs:
        key = run_key(name, topology.kind, config)
        if key in done:
            log.info("%s: kept from the earlier partial results", key)
            run = done[key]
        else:
            log.info("method %s on %s topology", name, topology.kind)
            run = run_method(name, config, devices, topology, evals, cache_dir, validation)
        if topology is main_topology:
            results["methods"][name] = run
        else:
            results["ablation"][topology.kind] = {**run, "graph": topology_json(topology, devices)}
        results["wall_seconds"] = time.monotonic() - started
        progress(results)
    if config.ablation_topologies and "solora" in results["methods"]:
        results["ablation"][config.topology] = {
            **results["methods"]["solora"],
            "graph": topology_json(main_topology, devices),
        }
    results["wall_seconds"] = time.monotonic() - started
    return results


def _base_hits(
    config: SimConfig, base: Any, evals: dict[str, TaskData], cache: Path | None
) -> dict[str, list[bool]]:
    """The base model's per-example results, read from `cache` when it holds this model's
    results on these very examples (and written there otherwise)."""
    key = {
        "model": config.model,
        "seed": config.seed,
        "max_seq_len": config.max_seq_len,
        "sets": {t: eval_fingerprint(d.eval) for t, d in evals.items()},
    }
    if cache is not None and cache.is_file():
        try:
            stored = json.loads(cache.read_text())
        except ValueError:
            stored = {}
        if stored.get("key") == key:
            return {t: [bool(h) for h in v] for t, v in stored["hits"].items()}
    hits = hits_all(base.model, base.tokenizer, evals, config.max_seq_len)
    if cache is not None:
        partial = cache.with_suffix(".partial")
        partial.write_text(json.dumps({"key": key, "hits": hits}))
        partial.replace(cache)  # atomic: processes side by side never read half a file
    return hits


def _reusable(previous: dict[str, Any] | None, fresh: dict[str, Any]) -> dict[str, Any]:
    """Runs of `previous` that measured the same experiment (config and eval sets)."""
    if not previous:
        return {}
    for key in ("config", "eval_sets", "seed"):
        if previous.get(key) != json.loads(json.dumps(fresh[key])):
            raise SimConfigError(
                f"--resume: the partial results have another {key} than this run; "
                "expected the same config, seed and eval sets (or a fresh --out folder)"
            )
    runs = dict(previous.get("methods", {}))
    for kind, run in previous.get("ablation", {}).items():
        if kind != fresh["config"]["topology"]:
            runs[f"solora@{kind}"] = {k: v for k, v in run.items() if k != "graph"}
    return runs


def summary_json(results: dict[str, Any]) -> dict[str, Any]:
    """The `sim --json` object: headline numbers per method."""
    return {
        "preset": results["preset"],
        "seed": results["seed"],
        "methods": {
            name: {
                "avg_accuracy": r["avg_accuracy"],
                "per_task": r["per_task"],
                "bytes_total": r["bytes_total"],
            }
            for name, r in results["methods"].items()
        },
    }
