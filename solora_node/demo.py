"""`solora-node demo`: a real federation of node processes on this machine, start to finish.

N `solora-node run` processes on loopback (mDNS pinned to 127.0.0.1, ephemeral ports,
mutual TLS with a throw-away federation CA), each on a built-in task (nodes of one task
hold disjoint shards). A live table while they train; at the end, per-task accuracy of
the base model ("before") and of one node's merged model with the implicit-MoE gate
("after"), the bytes really sent, and what standard LoRA would have sent.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solora_node.errors import SoloraError
from solora_node.metrics import parse_exposition
from solora_node.testbed.local import LocalFederation, NodeSpec

# Tasks in the order the demo uses them: the ones SmolLM2-135M starts worst at and
# learns fastest come first (measured, see docs/operations.md).
DEMO_TASKS = ("topic", "language", "arithmetic", "reverse")
TABLE_EVERY_S = 2.0
READY_TIMEOUT_S = 900.0


@dataclass
class DemoPlan:
    nodes: int = 4
    tasks: int = 2
    rounds: int = 12
    model: str = "default"
    eval_examples: int = 48
    steps_per_round: int = 6
    workdir: Path | None = None
    keep: bool = False
    task_names: tuple[str, ...] = field(default=())

    def chosen_tasks(self) -> list[str]:
        names = list(self.task_names or DEMO_TASKS[: self.tasks])
        if not 1 <= len(names) <= self.nodes:
            raise SoloraError(f"demo: need 1..{self.nodes} tasks for {self.nodes} nodes")
        return names


def node_specs(plan: DemoPlan) -> list[NodeSpec]:
    """Round-robin nodes over tasks; same-task nodes get disjoint shards."""
    tasks = plan.chosen_tasks()
    owners: dict[str, list[int]] = {t: [] for t in tasks}
    for i in range(plan.nodes):
        owners[tasks[i % len(tasks)]].append(i)
    specs = []
    for task, indices in owners.items():
        for shard, i in enumerate(indices):
            specs.append(NodeSpec(f"node-{i + 1}", task, shard, len(indices)))
    return sorted(specs, key=lambda s: s.node_id)


def base_config(plan: DemoPlan) -> dict[str, Any]:
    tiny = plan.model == "tiny"
    return {
        "federation": {
            "id": "solora-demo",
            "tasks": plan.chosen_tasks(),
            "rank": 8,
            "warmup_steps": 4 if tiny else 8,
        },
        "model": {"base": plan.model},
        "task": {"eval_examples": plan.eval_examples},
        "train": {
            "steps_per_round": plan.steps_per_round,
            "batch_size": 8,
            "max_seq_len": 64,
            # The real model takes the density-tied default (docs/results.md); the tiny
            # random one only shows that rounds run.
            **({"lr": 5e-3} if tiny else {}),
            "threads": 1,
        },
        "network": {"liveness_deadline_s": 20.0, "health_interval_s": 2.0},
        "metrics": {"eval_every": max(1, plan.rounds // 3)},
        "rounds": {"max_rounds": plan.rounds, "min_interval_s": 0},  # a demo is not paced
    }


def _scrape(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return parse_exposition(text)


def _table(fed: LocalFederation, last: dict[str, dict[str, float]]) -> str:
    rows = [f"{'node':10} {'task':10} {'round':>5} {'loss':>7} {'peers':>5} {'bytes sent':>11}"]
    for node_id, node in fed.nodes.items():
        if node.running() and node.metrics_port:
            scraped = _scrape(node.metrics_port)
            if scraped:
                last[node_id] = scraped
        m = last.get(node_id, {})
        sent = sum(v for k, v in m.items() if k.startswith("solora_bytes_sent_total"))
        state = "" if node.running() else " (done)"
        rows.append(
            f"{node_id:10} {node.spec.task:10} {int(m.get('solora_round{}', 0)):>5} "
            f"{m.get('solora_train_loss{}', float('nan')):>7.3f} "
            f"{int(m.get('solora_peers{state=live}', 0)):>5} "
            f"{int(sent):>11}{state}"
        )
    return "\n".join(rows)


def run_federation(plan: DemoPlan, root: Path, log: Any = sys.stderr) -> LocalFederation:
    fed = LocalFederation(root, node_specs(plan), base_config(plan), tls=True)
    last: dict[str, dict[str, float]] = {}
    try:
        fed.start()
        # Loading SmolLM2 in N processes at once on 2 cores takes minutes under load.
        fed.wait_ready(timeout=READY_TIMEOUT_S)
        print(f"demo: {len(fed.nodes)} nodes up (mutual TLS, mDNS on 127.0.0.1)", file=log)
        while any(n.running() for n in fed.nodes.values()):
            print(_table(fed, last) + "\n", file=log, flush=True)
            deadline = time.monotonic() + TABLE_EVERY_S
            while time.monotonic() < deadline and any(n.running() for n in fed.nodes.values()):
                time.sleep(0.2)
        print(_table(fed, last), file=log, flush=True)
        failed = {
            n: p.proc.returncode
            for n, p in fed.nodes.items()
            if p.proc is not None and p.proc.returncode != 0
        }
        if failed:
            detail = "\n".join(f"--- {n}:\n{fed.tail(n)}" for n in failed)
            raise SoloraError(f"demo: nodes failed {failed}\n{detail}")
    except BaseException:
        fed.kill_all()  # Ctrl-C or failure: no process is left behind
        raise
    return fed


def evaluate_models(
    plan: DemoPlan, fed: LocalFederation, holder: str
) -> tuple[dict[str, dict[str, float]], float]:
    """Before (base model) and after (holder's merged model, auto gate) per task."""
    import dataclasses

    from solora_node.adapter.checkpoint import load_checkpoint
    from solora_node.config import ModelSection
    from solora_node.data.tasks import builtin_task
    from solora_node.defaults import FEDERATION_SEED
    from solora_node.train.evaluate import evaluate_all, evaluate_merged

    seed = FEDERATION_SEED  # the nodes cut their splits with the federation seed
    loaded = load_checkpoint(fed.nodes[holder].data_dir / "adapter", ModelSection().cache_dir)
    so, tokenizer = loaded.so, loaded.base.tokenizer
    evals = {}
    for task_name in plan.chosen_tasks():
        task = builtin_task(task_name, seed)
        evals[task_name] = dataclasses.replace(task, eval=task.eval[: plan.eval_examples])
    merged = evaluate_merged(so, tokenizer, evals, so.codes)
    so.use_base()
    before = evaluate_all(so.model, tokenizer, evals)
    results = {
        t: {"before": before[t], "after": merged.accuracy[t], "after_oracle": merged.oracle[t]}
        for t in evals
    }
    routed_right = sum(merged.routed_right.values())
    return results, routed_right / max(sum(merged.routed_total.values()), 1)


def lora_bytes_per_exchange(model: str, rank: int) -> int:
    """Bytes of one standard-LoRA payload (A and B dense fp32), counted like `bench payload`."""
    import torch

    from solora_node.adapter import BlockVersion, target_layers
    from solora_node.adapter.baselines import lora_delta
    from solora_node.config import FederationSection, ModelSection
    from solora_node.model import load_base_model
    from solora_node.net.codec import encoded_size

    loaded = load_base_model(model, ModelSection().cache_dir)
    shapes = target_layers(loaded.model, tuple(FederationSection().target_modules))
    a = {name: torch.zeros(rank, d_in) for name, (_, d_in) in shapes.items()}
    b = {name: torch.zeros(d_out, rank) for name, (d_out, _) in shapes.items()}
    return encoded_size(lora_delta(BlockVersion("lora", 1, "demo"), a, b))


def run_demo(plan: DemoPlan, log: Any = sys.stderr) -> dict[str, Any]:
    import json

    started = time.monotonic()
    root = plan.workdir or Path(tempfile.mkdtemp(prefix="solora-demo-"))
    try:
        fed = run_federation(plan, root, log)
        summaries = {
            n: json.loads((p.data_dir / "summary.json").read_text()) for n, p in fed.nodes.items()
        }
        holder = sorted(fed.nodes)[0]
        print(f"demo: evaluating {holder}'s merged model (implicit MoE, auto gate)", file=log)
        tasks, routing = evaluate_models(plan, fed, holder)
        per_exchange = lora_bytes_per_exchange(plan.model, 8)
        lora_total = sum(
            s["rounds_this_run"] * len(s["neighbours"]) * per_exchange for s in summaries.values()
        )
        nodes = [
            {
                "id": n,
                "task": s["task"],
                "rounds": s["rounds_this_run"],
                "bytes_sent": s["bytes_sent"]["delta"] + s["bytes_sent"]["control"],
            }
            for n, s in sorted(summaries.items())
        ]
        return {
            "nodes": nodes,
            "tasks": tasks,
            "bytes_sent_total": sum(n["bytes_sent"] for n in nodes),
            "lora_bytes_equivalent": lora_total,
            "routing_accuracy": routing,
            "model": plan.model,
            "rounds": plan.rounds,
            "wall_seconds": round(time.monotonic() - started, 1),
        }
    finally:
        if not plan.keep and plan.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


def format_summary(result: dict[str, Any]) -> str:
    lines = [f"{'task':12} {'before':>7} {'after':>7} {'oracle':>7}"]
    for name, r in result["tasks"].items():
        lines.append(f"{name:12} {r['before']:>7.3f} {r['after']:>7.3f} {r['after_oracle']:>7.3f}")
    sent, lora = result["bytes_sent_total"], result["lora_bytes_equivalent"]
    lines.append(f"routing accuracy (auto gate): {result['routing_accuracy']:.3f}")
    lines.append(
        f"bytes sent: {sent:,}; standard LoRA for the same exchanges: {lora:,} "
        f"({1 - sent / lora:.1%} less)"
        if lora
        else f"bytes sent: {sent:,}"
    )
    lines.append(f"wall time: {result['wall_seconds']} s")
    return "\n".join(lines)
