"""`bench serve`: the OpenAI-compatible API under load, as a client sees it.

A checkpoint with one expert per built-in task (random blocks: latency does not depend on
their values; routing codes from the tasks' real inputs) is served by a separate
`solora-node serve` process on 127.0.0.1. Client threads with keep-alive connections send
short chat completions with 1, 4 and 16 concurrent clients; reported per level: requests/s,
latency p50/p95, generated tokens/s. Then `auto` against a fixed task with one token per
answer (the routing pass is the difference), and the cost of a daemon's expert swap.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from solora_node.adapter import compute_codes, inject, set_block_tensors
from solora_node.adapter.checkpoint import save_checkpoint
from solora_node.adapter.model import SoLoraModel
from solora_node.adapter.prompts import prompt_batches
from solora_node.config import FederationSection, ModelSection
from solora_node.errors import SoloraError
from solora_node.method_settings import solora_config
from solora_node.model import load_base_model
from solora_node.serving.process import ServeProcess

DEFAULT_TASKS = ("arithmetic", "topic", "reverse")
REQUEST_TIMEOUT_S = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="default, tiny or a local HF folder")
    parser.add_argument("--cache-dir", type=Path, default=ModelSection().cache_dir)
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="built-in tasks")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=4, help="requests per client per level")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per completion")
    parser.add_argument("--routing-requests", type=int, default=20, help="auto vs fixed, each")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    parser.add_argument("--seed", type=int, default=FederationSection().seed)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from solora_node.data.tasks import builtin_task  # the data package owns the task suite

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    tasks = list(args.tasks)
    data = {t: builtin_task(t, args.seed) for t in tasks}
    prompts = [ex.input for t in tasks for ex in data[t].eval[:8]]
    loaded = load_base_model(args.model, args.cache_dir)
    so = inject(loaded.model, solora_config(FederationSection(tasks=tasks)))
    generator = torch.Generator().manual_seed(args.seed)
    for task in tasks:
        shapes = so.block_shapes()
        set_block_tensors(
            so, task, {n: 0.02 * torch.randn(s, generator=generator) for n, s in shapes.items()}
        )
        inputs = [ex.input for ex in data[task].train[:32]]
        so.codes[task] = compute_codes(so, prompt_batches(loaded.tokenizer, inputs))
    swap = _swap_cost(so, loaded.tokenizer)
    routing_pass = _routing_pass_ms(so, loaded.tokenizer, prompts)
    direct = _direct_tokens_per_s(so, loaded.tokenizer, tasks[0], prompts, args.max_tokens)
    workdir = Path(tempfile.mkdtemp(prefix="solora-bench-serve-"))
    try:
        save_checkpoint(so, workdir / "adapter", base_model=args.model, federation_id="bench")
        del so, loaded
        options = ["--cache-dir", str(args.cache_dir), "--threads", str(args.threads)]
        options += ["--max-queue", str(max(args.clients) * 2)]
        options += ["--max-tokens", str(max(args.max_tokens, 1))]
        with ServeProcess(workdir / "adapter", *options) as server:
            for model in (tasks[0], "auto"):  # warm-up: first calls pay one-time costs
                _level(server.port, model, prompts, 1, 2, 2)
            levels = {
                str(c): _level(server.port, tasks[0], prompts, c, args.requests, args.max_tokens)
                for c in args.clients
            }
            fixed = _level(server.port, tasks[0], prompts, 1, args.routing_requests, 1)
            auto = _level(server.port, "auto", prompts, 1, args.routing_requests, 1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "model": args.model,
        "tasks": tasks,
        "max_tokens": args.max_tokens,
        "server_threads": args.threads,
        "levels": levels,
        "auto_routing": {
            "fixed_task_p50_ms": fixed["latency_p50_ms"],
            "auto_p50_ms": auto["latency_p50_ms"],
            "cost_per_request_ms": round(auto["latency_p50_ms"] - fixed["latency_p50_ms"], 2),
            "routing_pass_ms": routing_pass,
            "requests": args.routing_requests,
            "note": "one-token answers, so the p50 difference is the routing pass end to end; "
            "routing_pass_ms times the gate alone (one base-model pass over the prompt)",
        },
        "swap": swap,
        "direct_generate_tokens_per_s": direct,
        "experts": "random blocks (latency does not depend on their values)",
        # Other work on the machine slows every figure; say how busy it was.
        "load_avg_1m": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
    }


def _routing_pass_ms(so: SoLoraModel, tokenizer: Any, prompts: list[str]) -> float:
    """Median time of the `auto` gate alone for one prompt, in this process."""
    from solora_node.adapter.prompts import prompt_batch
    from solora_node.adapter.routing import route

    times = []
    route(so, prompt_batch(tokenizer, prompts[:1]))  # warm-up
    for text in prompts[:16]:
        started = time.perf_counter()
        route(so, prompt_batch(tokenizer, [text]))
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def _direct_tokens_per_s(
    so: SoLoraModel, tokenizer: Any, task: str, prompts: list[str], max_tokens: int
) -> float:
    """The same greedy generation without HTTP, in this process: the API's overhead is the gap."""
    from solora_node.adapter.prompts import prompt_batch

    so.use_task(task)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def generate(text: str, new_tokens: int) -> int:
        batch = prompt_batch(tokenizer, [text])
        with torch.no_grad():
            out = so.model.generate(  # type: ignore[operator]
                **batch, max_new_tokens=new_tokens, do_sample=False, pad_token_id=pad
            )
        return int(out.shape[1] - batch["input_ids"].shape[1])

    generate(prompts[0], 2)  # warm-up
    started = time.perf_counter()
    tokens = sum(generate(text, max_tokens) for text in prompts[:4])
    return round(tokens / (time.perf_counter() - started), 2)


def _swap_cost(so: SoLoraModel, tokenizer: Any) -> dict[str, float]:
    """What a daemon pays per round to serve fresh experts: the snapshot (training waits for
    it) and the install into the serving copy (requests wait for it)."""
    from solora_node.serving.engine import ExpertEngine
    from solora_node.serving.live import serving_copy, snapshot

    engine = ExpertEngine(serving_copy(so), tokenizer)
    started = time.perf_counter()
    shot = snapshot(so, 1)
    taken = time.perf_counter()
    engine.install(shot)
    done = time.perf_counter()
    return {
        "snapshot_ms": round((taken - started) * 1000, 2),
        "install_ms": round((done - taken) * 1000, 2),
    }


def _level(
    port: int, model: str, prompts: list[str], clients: int, per_client: int, max_tokens: int
) -> dict[str, Any]:
    latencies: list[float] = []
    tokens: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        try:
            for k in range(per_client):
                text = prompts[(index * per_client + k) % len(prompts)]
                body = json.dumps(
                    {
                        "model": model,
                        "messages": [{"role": "user", "content": text}],
                        "max_tokens": max_tokens,
                    }
                )
                started = time.perf_counter()
                connection.request(
                    "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                payload = json.loads(response.read())
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status != 200:
                        failures.append(f"{response.status} {payload.get('error', {})}")
                    else:
                        latencies.append(elapsed)
                        tokens.append(int(payload["usage"]["completion_tokens"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise SoloraError(f"bench serve: {len(failures)} requests failed, first: {failures[0]}")
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 3),
        "latency_p50_ms": round(statistics.median(ordered) * 1000, 1),
        "latency_p95_ms": round(ordered[max(0, round(0.95 * len(ordered)) - 1)] * 1000, 1),
        "tokens_per_s": round(sum(tokens) / wall, 2),
        "completion_tokens": sum(tokens),
        "wall_s": round(wall, 2),
    }
