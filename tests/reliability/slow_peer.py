"""A federation member that hangs in every exchange: `python -m tests.reliability.slow_peer SPEC`.

It runs the real PeerServer (health checks answer SERVING, handshakes succeed) with the
real session class replaced by StallingSession, and it keeps saying hello to the nodes it
is given, so they plan it into their cluster and must get past it within their deadlines.
Prints {"port": N} once serving; runs until its stdin closes (never outlives the test).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from solora_node.net import server as server_module
from solora_node.net.client import PeerClient
from solora_node.net.limits import WireLimits
from solora_node.net.security import load_tls_dir
from solora_node.testing.memory_store import InMemoryStore
from tests.support.faults import StallingSession


async def serve(spec: dict[str, object]) -> None:
    # Patched in this process only: the servicer builds its sessions from this name.
    server_module.ExchangeSession = StallingSession  # type: ignore[misc]
    node_id = str(spec["node_id"])
    store = InMemoryStore(
        node_id=node_id,
        task=str(spec["task"]),
        layouts={},
        federation_id=str(spec["federation_id"]),
        fingerprint=str(spec["fingerprint"]),
    )
    tls = load_tls_dir(Path(str(spec["tls_dir"])), node_id)
    limits = WireLimits(chunk_deadline_s=3600, exchange_deadline_s=3600)
    server = server_module.PeerServer(store, tls=tls, limits=limits)
    port = await server.start()
    store.address = f"127.0.0.1:{port}"
    print(json.dumps({"port": port}), flush=True)
    client = PeerClient(store, tls=tls)
    targets: dict[str, str] = dict(spec["targets"])  # type: ignore[call-overload]
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    while not stdin_closed.done():
        for target_id, address in targets.items():
            await client.handshake(address, expected_node_id=target_id)
        await asyncio.wait({stdin_closed}, timeout=1.0)
    await client.close()
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(serve(json.loads(sys.argv[1])))
