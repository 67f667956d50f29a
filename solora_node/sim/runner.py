"""An experiment: every method (and the topology ablation) over the same devices, shards,
eval sets and rounds; results as one JSON-friendly dict."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from solora_node.model import load_base_model
from solora_node.sim.config import SimConfig
from solora_node.sim.dense import DenseLoraStrategy, HardMoeStrategy, LocalStrategy
from solora_node.sim.devices import Device, build_devices, eval_fingerprint, eval_sets
from solora_node.sim.lori import LoriStrategy
from solora_node.sim.rounds import SimFederation
from solora_node.sim.solora import SoLoraStrategy
from solora_node.sim.strategy import RunContext, Strategy
from solora_node.sim.topology import SimTopology, build_topology, task_consensus
from solora_node.train.evaluate import MergedEval as DeviceEval
from solora_node.train.evaluate import evaluate_all

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


def summarise(evals: list[DeviceEval], tasks: tuple[str, ...]) -> dict[str, Any]:
    """Per task: mean over devices; average: mean over tasks."""
    per_task = {t: _mean([e.accuracy[t] for e in evals]) for t in tasks}
    out: dict[str, Any] = {"avg_accuracy": _mean(list(per_task.values())), "per_task": per_task}
    if evals and evals[0].oracle:
        oracle = {t: _mean([e.oracle[t] for e in evals]) for t in tasks}
        out["per_task_oracle"] = oracle
        out["avg_accuracy_oracle"] = _mean(list(oracle.values()))
        right = sum(sum(e.routed_right.values()) for e in evals)
        total = sum(sum(e.routed_total.values()) for e in evals)
        out["routing_accuracy"] = right / total if total else float("nan")
        out["routing_per_task"] = {
            t: sum(e.routed_right[t] for e in evals) / sum(e.routed_total[t] for e in evals)
            for t in tasks
        }
    return out


def run_method(
    name: str,
    config: SimConfig,
    devices: list[Device],
    topology: SimTopology,
    evals: dict[str, Any],
    cache_dir: Path,
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
        if round_ % config.eval_every == 0 or round_ == config.rounds:
            device_evals = [sim.evaluate(i) for i in range(len(devices))]
            entry.update(summarise(device_evals, config.tasks))
            # Per device (device order), for readers who exclude some (e.g. poisoners).
            entry["device_accuracy"] = [e.accuracy for e in device_evals]
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
        "avg_accuracy",
        "per_task",
        "avg_accuracy_oracle",
        "per_task_oracle",
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


def run_experiment(
    config: SimConfig,
    cache_dir: Path,
    preset: str | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every configured method and the topology ablation; returns results.json's object.

    `on_progress` gets the partial results after each method run, so a long run that is
    stopped early still leaves what it measured.
    """
    progress = on_progress or (lambda results: None)
    config.check()
    torch.set_num_threads(config.threads)
    started = time.monotonic()
    devices = build_devices(config)
    evals = eval_sets(devices, config.eval_limit)
    main_topology = build_topology(config.topology, devices, config)
    base = load_base_model(config.model, cache_dir, seed=config.seed)
    base_accuracy = evaluate_all(base.model, base.tokenizer, evals)
    del base
    results: dict[str, Any] = {
        "preset": preset,
        "seed": config.seed,
        "config": dataclasses.asdict(config),
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
        },
        "topology": topology_json(main_topology, devices),
        "methods": {},
        "ablation": {},
    }
    for name in config.methods:
        log.info("method %s on %s topology", name, main_topology.kind)
        results["methods"][name] = run_method(
            name, config, devices, main_topology, evals, cache_dir
        )
        results["wall_seconds"] = time.monotonic() - started
        progress(results)
    for kind in config.ablation_topologies:
        topology = (
            main_topology if kind == config.topology else build_topology(kind, devices, config)
        )
        if kind == config.topology and "solora" in results["methods"]:
            run = results["methods"]["solora"]
        else:
            log.info("ablation: solora on %s topology", kind)
            run = run_method("solora", config, devices, topology, evals, cache_dir)
        results["ablation"][kind] = {**run, "graph": topology_json(topology, devices)}
        results["wall_seconds"] = time.monotonic() - started
        progress(results)
    if (
        config.ablation_topologies
        and config.topology not in results["ablation"]
        and "solora" in results["methods"]
    ):
        results["ablation"][config.topology] = {
            **results["methods"]["solora"],
            "graph": topology_json(main_topology, devices),
        }
    results["wall_seconds"] = time.monotonic() - started
    return results


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
