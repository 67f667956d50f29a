"""One node id, one live process: refusing a second concurrent holder of an id.

Every process has an incarnation (`new_incarnation` below) that it sends in its
hello and its mDNS TXT record. A hello that claims this node's own id, or the id of a
live peer from another incarnation, is refused with IDENTITY_IN_USE (counted in
solora_deltas_refused_total{reason="identity_in_use"}); at start, a node whose
bootstrap peers refuse it that way exits with one line instead of trading deltas
under someone else's identity.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from solora_node.net.client import PeerClient
from solora_node.net.handshake import Verdict
from solora_node.net.membership import MembershipView
from solora_node.node.startup import StartupError
from solora_node.protocol.messages import Hello
from solora_node.protocol.reasons import Reason

log = logging.getLogger("solora_node.identity")


def new_incarnation() -> int:
    """This process's life: its start time in unix microseconds (docs/protocol.md)."""
    return time.time_ns() // 1000


START_CHECK_TIMEOUT_S = 2.0


def identity_verdict(view: MembershipView, hello: Hello) -> Verdict | None:
    """IDENTITY_IN_USE for a second live holder of a peer's id; None when the hello may
    pass. (A hello claiming this node's own id is refused by net/handshake.py.)"""
    if not view.admits(hello.node_id, hello.incarnation):
        return Verdict(
            Reason.IDENTITY_IN_USE,
            f"node id {hello.node_id!r} is live here from another process (incarnation)",
        )
    return None


async def refuse_if_live_elsewhere(
    client: PeerClient,
    node_id: str,
    addresses: Iterable[tuple[str, int]],
    confirm_after_s: float,
) -> None:
    """Before advertising: a bootstrap peer that refuses us as a second holder of our id
    means another process runs as node_id: StartupError (exit 2).

    A node restarted right after a kill -9 is refused too until its old life misses the
    peers' liveness deadline, so a refusal is confirmed once after `confirm_after_s`."""
    targets = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addresses]
    refusal = await _refusal(client, targets)
    if refusal is None:
        return
    log.warning(
        "%s; checking again in %.0f s (a restart's old life fades)", refusal, confirm_after_s
    )
    await asyncio.sleep(confirm_after_s)
    refusal = await _refusal(client, targets)
    if refusal is not None:
        raise StartupError(
            f"node.id: {node_id!r} is live elsewhere ({refusal}); "
            "stop the other process or give this one its own node.id"
        )


async def _refusal(client: PeerClient, targets: list[str]) -> str | None:
    outcomes = await asyncio.gather(
        *(client.handshake(t, timeout=START_CHECK_TIMEOUT_S) for t in targets)
    )
    for target, outcome in zip(targets, outcomes, strict=True):
        if outcome.reason is Reason.IDENTITY_IN_USE:
            return f"{target} says: {outcome.message}"
    return None
