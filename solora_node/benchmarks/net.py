"""`bench net`: a real streamed exchange between two processes on 127.0.0.1, against
bare gRPC and raw TCP, like with like, in one run.

The sink is a loopback peer process (solora_node/testing/loopback.py) holding a dense
mask; this process pushes `--total-mib` of blocks (`--delta-mib` each) in one Exchange
stream, with mutual TLS from a throwaway CA unless --insecure. Against it, in the same
run and to the same sink process:
- grpc_bare: the same bytes as plain gRPC messages of the chunk size (same channel, same
  TLS) to a handler that only counts them: the cost of gRPC itself;
- raw_tcp_tls: the same bytes over one TCP socket with mutual TLS (Python's ssl, the same
  certificates), in chunk-size writes: the cost of TLS alone;
- raw_tcp: the same without TLS.
The exchange figure also covers encoding, chunking, checksums, decoding and validation
(shapes, finite values, norm) of every block, which the baselines do not do. Encoding
happens before the timer starts only for the baselines; the exchange encodes inside it.
MB/s means 10^6 bytes per second; each figure is the best of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from solora_node.net.client import PeerClient
from solora_node.net.limits import WireLimits
from solora_node.net.security import init_ca, issue_node_cert, load_tls_dir
from solora_node.testing.loopback import (
    DRAIN_METHOD,
    LoopbackPeer,
    build_store,
    raw_tls_context,
)

TASK = "bench"
LAYER_VALUES = 1 << 18  # 262144 values per layer: 512 KiB in fp16, rank 8 x d_out 32768
SINK, SOURCE = "bench-sink", "bench-source"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--total-mib", type=int, default=64, help="bytes moved per run")
    parser.add_argument("--delta-mib", type=int, default=4, help="size of one block")
    parser.add_argument("--chunk-kib", type=int, default=1024, help="chunk size (default 1 MiB)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each; the best counts")
    parser.add_argument("--insecure", action="store_true", help="plaintext gRPC instead of mTLS")


def _spec(
    layers: int, limits: dict[str, Any], blocks: list[dict[str, Any]], node: str
) -> dict[str, Any]:
    layout = {f"model.layers.{i}.q_proj": [LAYER_VALUES // 8, 8] for i in range(layers)}
    return {
        "node_id": node,
        "task": TASK,
        "layouts": {TASK: layout},
        "masks": [{"task": TASK, "density": 1.0, "seed": 0}],
        "blocks": blocks,
        "limits": limits,
    }


async def _bare_grpc_runs(
    child: LoopbackPeer, parts: list[bytes], limits: WireLimits, tls_dir: Path | None, repeats: int
) -> float:
    """The same bytes as raw gRPC messages (no protobuf, no protocol): gRPC's own floor."""
    client = PeerClient(
        build_store(_spec(1, {}, [], SOURCE)),
        tls=load_tls_dir(tls_dir, SOURCE) if tls_dir else None,
        limits=limits,
    )
    try:
        drain = client.channel(child.address, SINK).stream_unary(DRAIN_METHOD)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            reply = await drain(iter(parts))
            best = min(best, time.perf_counter() - start)
            if int.from_bytes(reply, "little") != sum(len(p) for p in parts):
                raise RuntimeError("bare gRPC sink lost bytes")
        return best
    finally:
        await client.close()


async def _grpc_runs(
    child: LoopbackPeer,
    source_specs: list[dict[str, Any]],
    limits: WireLimits,
    tls_dir: Path | None,
) -> tuple[float, int]:
    best, moved = float("inf"), 0
    for spec in source_specs:
        store = build_store(spec | {"take": False})
        sent = len(store.blocks)
        client = PeerClient(
            store, tls=load_tls_dir(tls_dir, SOURCE) if tls_dir else None, limits=limits
        )
        try:
            warm = await client.handshake(child.address, SINK)  # connect + TLS outside the timing
            if not warm.ok:
                raise RuntimeError(f"bench sink refused the handshake: {warm.reason.value}")
            start = time.perf_counter()
            result = await client.exchange(child.address, SINK)
            elapsed = time.perf_counter() - start
        finally:
            await client.close()
        if not result.ok or result.items_sent != sent:
            raise RuntimeError(f"bench exchange failed: {result}")
        moved = result.bytes_sent
        best = min(best, elapsed)
    return best, moved


def _raw_tcp_run(
    port: int, payload: memoryview, chunk: int, context: ssl.SSLContext | None = None
) -> float:
    with socket.create_connection(("127.0.0.1", port)) as plain:
        plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn: socket.socket = plain
        if context is not None:
            secure = context.wrap_socket(plain, server_hostname=SINK)
            secure.do_handshake()  # like the exchange: connection and TLS outside the timing
            conn = secure
        start = time.perf_counter()
        conn.sendall(len(payload).to_bytes(8, "little"))
        for offset in range(0, len(payload), chunk):
            conn.sendall(payload[offset : offset + chunk])
        if conn.recv(1) != b"k":
            raise RuntimeError("raw TCP sink did not confirm")
        return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, Any]:
    layers = max(1, args.delta_mib * (1 << 20) // (LAYER_VALUES * 2))
    deltas = max(1, args.total_mib // args.delta_mib)
    chunk = args.chunk_kib * 1024
    limits_kw = {
        "chunk_bytes": chunk,
        "max_message_bytes": max(8 << 20, chunk + (1 << 20)),
        "max_delta_bytes": max(256 << 20, 2 * args.delta_mib << 20),
        "norm_bound": 1e9,
    }
    limits = WireLimits(**limits_kw)
    with tempfile.TemporaryDirectory(prefix="solora-bench-net-") as tmp:
        tls_dir = None if args.insecure else Path(tmp)
        if tls_dir is not None:
            init_ca(tls_dir, "bench")
            for node in (SINK, SOURCE):
                issue_node_cert(tls_dir, node)
        sink = _spec(layers, limits_kw, [], SINK) | {"raw_sink": True}
        if tls_dir is not None:
            sink["tls_dir"] = str(tls_dir)
        # Distinct origins per run, so the sink wants every block every time.
        sources = [
            _spec(
                layers,
                limits_kw,
                [{"mask": 0, "round": 0, "origin": f"o{r}-{i}", "seed": i} for i in range(deltas)],
                SOURCE,
            )
            for r in range(args.repeats)
        ]
        with LoopbackPeer(sink) as child:
            grpc_s, moved = asyncio.run(_grpc_runs(child, sources, limits, tls_dir))
            assert child.raw_port is not None
            payload = memoryview(bytes(moved))
            raw_s = min(_raw_tcp_run(child.raw_port, payload, chunk) for _ in range(args.repeats))
            raw_tls_s = None
            if tls_dir is not None and child.raw_tls_port is not None:
                context = raw_tls_context(tls_dir, SOURCE, peer_id=SINK)
                raw_tls_s = min(
                    _raw_tcp_run(child.raw_tls_port, payload, chunk, context)
                    for _ in range(args.repeats)
                )
            parts = [bytes(payload[i : i + chunk]) for i in range(0, moved, chunk)]
            bare_s = asyncio.run(_bare_grpc_runs(child, parts, limits, tls_dir, args.repeats))
    grpc_mb_s = moved / grpc_s / 1e6
    raw_mb_s = moved / raw_s / 1e6
    bare_mb_s = moved / bare_s / 1e6
    raw_tls_mb_s = moved / raw_tls_s / 1e6 if raw_tls_s is not None else None
    return {
        "benchmark": "net",
        "grpc_mb_s": round(grpc_mb_s, 1),
        "grpc_bare_mb_s": round(bare_mb_s, 1),
        "raw_tcp_tls_mb_s": round(raw_tls_mb_s, 1) if raw_tls_mb_s is not None else None,
        "raw_tcp_mb_s": round(raw_mb_s, 1),
        "ratio_to_bare_grpc": round(grpc_mb_s / bare_mb_s, 3),
        "ratio_to_raw_tcp_tls": (
            round(grpc_mb_s / raw_tls_mb_s, 3) if raw_tls_mb_s is not None else None
        ),
        "ratio": round(grpc_mb_s / raw_mb_s, 3),
        "bare_ratio": round(bare_mb_s / raw_mb_s, 3),
        "payload_bytes": moved,
        "deltas": deltas,
        "delta_bytes": layers * LAYER_VALUES * 2,
        "chunk_bytes": chunk,
        "tls": tls_dir is not None,
        "repeats": args.repeats,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "mb": "10^6 bytes",
    }
