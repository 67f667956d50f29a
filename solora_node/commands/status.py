"""`solora-node status --addr HOST:PORT`: ask a running node what it is doing.

It starts fast: nothing here (nor in the wire modules it imports) loads torch, peft
or transformers; tests/unit/test_status_command.py keeps it so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from solora_node.commands._common import emit_json
from solora_node.config_locate import CONFIG_ENV, DEFAULT_CONFIG_PATH, locate_node_config
from solora_node.errors import SoloraError
from solora_node.protocol.messages import NodeStatus


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="query a running node")
    parser.add_argument("--addr", default="127.0.0.1:7070", help="the node's gRPC HOST:PORT")
    parser.add_argument(
        "--config",
        type=Path,
        help=(
            f"a node config whose TLS certificate to present (mTLS); default ${CONFIG_ENV}, "
            f"then {DEFAULT_CONFIG_PATH}"
        ),
    )
    parser.add_argument("--insecure", action="store_true", help="plaintext (insecure nodes)")
    parser.add_argument("--node-id", help="the id the node's certificate must carry")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def status_json(status: NodeStatus) -> dict[str, Any]:
    """Stable, documented keys (docs/operations.md)."""
    return {
        "node_id": status.node_id,
        "task": status.task,
        "round": status.round,
        "federation": status.federation_id,
        "cluster": status.cluster,
        "neighbours": [
            {
                "id": n.peer.node_id,
                "task": n.peer.task,
                "address": n.peer.address,
                "state": n.state,
                "role": n.role,
            }
            for n in status.neighbours
        ],
        "last_exchanges": [
            {
                "peer": r.peer,
                "round": r.round,
                "ok": r.ok,
                "reason": r.reason.value,
                "items_sent": r.items_sent,
                "items_received": r.items_received,
                "bytes_sent": r.bytes_sent,
                "bytes_received": r.bytes_received,
                "duration_s": round(r.duration_s, 4),
            }
            for r in status.last_exchanges
        ],
        "details": dict(status.details),
    }


def _tls_for(args: argparse.Namespace) -> Any:
    """The TLS material to present, or None for --insecure (or a config with insecure: true)."""
    from solora_node.config import load_config
    from solora_node.net.security import load_tls

    if args.insecure:
        return None
    path, tried = locate_node_config(args.config, os.environ)
    if path is None:
        raise SoloraError(
            f"no node config to take TLS material from: tried {', '.join(tried)}; "
            "give --config NODE.yaml or --insecure"
        )
    cfg = load_config(path)
    return load_tls(cfg.network, cfg.node.id)


async def fetch_status(args: argparse.Namespace) -> Any:
    """The node's status reply (protocol.messages.NodeStatus), authenticated as
    --config/SOLORA_CONFIG/--insecure say; `topology --addr` asks the same way."""
    from solora_node.net.client import PeerClient

    client = PeerClient(tls=_tls_for(args))
    try:
        return await client.status(args.addr, args.node_id, timeout=args.timeout)
    finally:
        await client.close()


async def _query(args: argparse.Namespace) -> dict[str, Any]:
    return status_json(await fetch_status(args))


def handle(args: argparse.Namespace) -> int:
    import logging

    # No INSECURE banner for a read-only query the operator asked for in plaintext.
    logging.getLogger("solora_node.net.client").setLevel(logging.ERROR)
    logging.getLogger("solora_node.net.security").setLevel(logging.ERROR)
    result = asyncio.run(_query(args))
    if args.json:
        emit_json(result)
    else:
        print(f"{result['node_id']}  task={result['task']}  round={result['round']}")
        for n in result["neighbours"]:
            print(f"  {n['role']:8} {n['id']:16} {n['task']:12} {n['state']}")
        for key, value in sorted(result["details"].items()):
            print(f"  {key}: {value}")
    return 0
