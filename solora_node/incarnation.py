"""Process incarnations: one node id, several lives.

Every `solora-node run` process draws an incarnation (its start time in unix
microseconds). It travels in the hello, the mDNS TXT record and every block version,
so that (1) two processes claiming one node id at once are told apart, and (2) a node
that restarted without its state (round 0 again) is recognised as newer than what
its peers hold of its previous life (docs/protocol.md).
"""

from __future__ import annotations

import time

from solora_node.adapter.payload import BlockVersion


def new_incarnation() -> int:
    return time.time_ns() // 1000


def newer_version(a: BlockVersion, b: BlockVersion | None) -> bool:
    """Is `a` fresher than `b`? Copies of one origin: a later incarnation wins whatever
    its round; otherwise the later round, then the lower origin id (deterministic).
    Incarnation 0 (a peer that does not send one) falls back to the round order."""
    if b is None:
        return True
    if a.origin == b.origin and a.incarnation and b.incarnation and a.incarnation != b.incarnation:
        return a.incarnation > b.incarnation
    return (a.round, _neg(a.origin)) > (b.round, _neg(b.origin))


def _neg(origin: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in origin)
