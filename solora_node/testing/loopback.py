"""A peer in its own process on 127.0.0.1, for multi-process tests and the net benchmark.

The child builds an InMemoryStore from a JSON spec (seeded masks and blocks, so
the parent can rebuild the very same bytes), serves it on an ephemeral port,
prints one JSON line {"port": ..., "raw_port": ..., "raw_tls_port": ...} and runs
until its stdin closes, so it never outlives its parent. With "raw_sink" it also
accepts plain TCP transfers (8-byte length, payload, 1-byte reply), the same over
mutual TLS with the node's certificate when it has a tls_dir, and bare gRPC byte
streams (DRAIN_METHOD) as baselines for the full protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from solora_node.net.limits import WireLimits
from solora_node.net.security import CA_CERT_FILE, load_tls_dir
from solora_node.net.server import PeerServer
from solora_node.testing.memory_store import InMemoryStore
from solora_node.testing.workload import random_mask, synthetic_delta

Spec = dict[str, Any]


def build_store(spec: Spec) -> InMemoryStore:
    """Spec keys: node_id, task, layouts {task: {layer: [d_out, r]}}, masks [{task, density,
    seed}], blocks [{mask, round, origin, encoding, seed}]; optional hold_masks (indices of
    the masks the store holds; default all), take (default true), federation_id,
    fingerprint, round."""
    layouts = {
        task: {layer: (int(s[0]), int(s[1])) for layer, s in layers.items()}
        for task, layers in spec["layouts"].items()
    }
    store = InMemoryStore(
        node_id=spec["node_id"],
        task=spec["task"],
        layouts=layouts,
        federation_id=spec.get("federation_id", "test-federation"),
        fingerprint=spec.get("fingerprint", "test-fingerprint"),
        round_=spec.get("round", 0),
        take=spec.get("take", True),
    )
    masks = [
        random_mask(m["task"], layouts[m["task"]], m["density"], m["seed"])
        for m in spec.get("masks", [])
    ]
    for index in spec.get("hold_masks", range(len(masks))):
        store.add_mask(masks[index])
    for b in spec.get("blocks", []):
        store.add_block(
            synthetic_delta(
                masks[b["mask"]],
                round_=b["round"],
                origin=b["origin"],
                encoding=b.get("encoding", "float16"),
                seed=b["seed"],
            )
        )
    return store


def _read_exact(conn: socket.socket, count: int) -> bytes:
    """`count` bytes, or fewer if the peer closed (TLS sockets take no MSG_WAITALL)."""
    parts, got = [], 0
    while got < count:
        part = conn.recv(count - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def raw_tls_context(tls_dir: Path, node_id: str, peer_id: str) -> ssl.SSLContext:
    """An ssl context for node_id's end of a raw mutual-TLS connection; the dialling end
    (peer_id given) checks that the server's certificate names peer_id."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT if peer_id else ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_dir / f"{node_id}.pem", tls_dir / f"{node_id}.key")
    context.load_verify_locations(tls_dir / CA_CERT_FILE)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _sink_connection(conn: socket.socket, context: ssl.SSLContext | None) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if context is not None:
        try:
            conn = context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return
    with conn:
        while True:
            head = _read_exact(conn, 8)
            if len(head) < 8:
                return
            remaining = int.from_bytes(head, "little")
            buf = bytearray(min(remaining, 4 << 20) or 1)
            view = memoryview(buf)
            while remaining:
                got = conn.recv_into(view, min(remaining, len(buf)))
                if not got:
                    return
                remaining -= got
            conn.sendall(b"k")


DRAIN_METHOD = "/solora.bench.Sink/Drain"


def drain_handler() -> grpc.GenericRpcHandler:
    """A bare gRPC sink: raw bytes messages, no protobuf, no protocol. The floor of what
    gRPC itself costs, for comparison with a full Exchange in `bench net`."""

    async def drain(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        received = 0
        async for message in requests:
            received += len(message)
        return received.to_bytes(8, "little")

    return grpc.method_handlers_generic_handler(
        "solora.bench.Sink", {"Drain": grpc.stream_unary_rpc_method_handler(drain)}
    )


def start_raw_sink(context: ssl.SSLContext | None = None) -> int:
    """Accept raw TCP transfers (over TLS with a context) in a daemon thread; returns the port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def accept_forever() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=_sink_connection, args=(conn, context), daemon=True).start()

    threading.Thread(target=accept_forever, daemon=True).start()
    return int(listener.getsockname()[1])


async def _serve(spec: Spec) -> None:
    store = build_store(spec)
    tls = load_tls_dir(Path(spec["tls_dir"]), spec["node_id"]) if spec.get("tls_dir") else None
    server = PeerServer(
        store,
        tls=tls,
        limits=WireLimits(**spec.get("limits", {})),
        allow_node_ids=spec.get("allow_node_ids"),
        extra_handlers=[drain_handler()] if spec.get("raw_sink") else (),
    )
    port = await server.start()
    raw_port = raw_tls_port = None
    if spec.get("raw_sink"):
        raw_port = start_raw_sink()
        if spec.get("tls_dir"):
            raw_tls_port = start_raw_sink(
                raw_tls_context(Path(spec["tls_dir"]), spec["node_id"], peer_id="")
            )
    print(
        json.dumps({"port": port, "raw_port": raw_port, "raw_tls_port": raw_tls_port}), flush=True
    )
    # Serve until the parent closes our stdin (or dies, which closes it too).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    await server.stop(0.5)


class LoopbackPeer:
    """Parent side: start the child, learn its ports, stop it (context manager)."""

    def __init__(self, spec: Spec, startup_timeout: float = 30.0) -> None:
        self.spec = spec
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.raw_port: int | None = None
        self.raw_tls_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LoopbackPeer:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "solora_node.testing.loopback", json.dumps(self.spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stdout], [], [], max(left, 0))
            if not ready:
                self.stop()
                raise TimeoutError("loopback peer did not report its port in time")
            byte = os.read(self.process.stdout.fileno(), 1)
            if not byte:
                self.stop()
                raise RuntimeError("loopback peer exited before reporting its port")
            line += byte
        ports = json.loads(line)
        self.port, self.raw_port = int(ports["port"]), ports.get("raw_port")
        self.raw_tls_port = ports.get("raw_tls_port")
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> LoopbackPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    asyncio.run(_serve(json.loads(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
