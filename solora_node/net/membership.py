"""Who is in the federation right now: peers from mDNS, bootstrap and peer exchange,
with a liveness state per peer driven by health-check reports and deadlines.

This module is pure bookkeeping (no sockets): `Discovery` and the node's health
checks feed it, topology planning reads `live_members()`. Time comes from an
injectable clock so the state machine is tested without waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)

PeerSource = Literal["self", "mdns", "bootstrap", "exchange"]
EventKind = Literal["added", "updated", "removed", "state"]

# Sources in which the peer itself spoke to us: its own mDNS announcement, or a
# handshake with it ("bootstrap": dialled from network.bootstrap_peers, and by
# extension any handshake, inbound too). "exchange" is hearsay from a third node.
DIRECT_SOURCES: frozenset[str] = frozenset({"mdns", "bootstrap"})

# Distinct ignored node ids remembered per reason: enough for counting on a LAN,
# bounded so that a noisy network cannot grow memory without limit.
IGNORED_IDS_CAP = 1024


@dataclass(frozen=True)
class PeerInfo:
    """What a node says about itself: identity, task, where to dial it, what it speaks."""

    node_id: str
    federation: str
    task: str
    host: str
    grpc_port: int
    metrics_port: int  # 0: no metrics endpoint
    protocol: int
    fingerprint: str
    source: PeerSource
    last_seen: float = 0.0  # clock() of the latest report; stamped by MembershipView
    incarnation: int = 0  # the process's life (solora_node/node/identity.py); 0: unknown


class PeerState(str, enum.Enum):
    LIVE = "live"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass(frozen=True)
class MembershipEvent:
    """added/updated/removed: the peer's info changed; state: its liveness changed."""

    kind: EventKind
    peer: PeerInfo
    state: PeerState


@dataclass
class _Entry:
    peer: PeerInfo
    state: PeerState
    # Start of the current grace period: the last proof of life, or when a
    # hearsay peer was first reported (it gets one deadline to be confirmed).
    alive_at: float
    failures: int = 0
    confirmed: bool = False


@dataclass
class _Ignored:
    ids: dict[str, set[str]] = field(default_factory=dict)

    def add(self, reason: str, node_id: str) -> None:
        seen = self.ids.setdefault(reason, set())
        if len(seen) < IGNORED_IDS_CAP:
            seen.add(node_id)

    def counts(self) -> dict[str, int]:
        return {reason: len(ids) for reason, ids in sorted(self.ids.items())}

    def of(self, reason: str) -> frozenset[str]:
        return frozenset(self.ids.get(reason, ()))


class MembershipView:
    """Merged membership with a per-peer liveness state machine.

    LIVE -> SUSPECT when no proof of life for `liveness_deadline_s` or on a
    reported failure; SUSPECT -> DEAD after `dead_after_s` without proof of life
    or after `max_failures` consecutive failures; any state -> LIVE on
    `mark_alive` or a direct report (mDNS announcement, handshake). A DEAD peer
    is forgotten (event "removed") after `forget_after_s`. A peer known only
    from peer exchange starts SUSPECT: it is listed, but only enters
    `live_members()` once a health check confirms it.
    """

    def __init__(
        self,
        self_peer: PeerInfo,
        liveness_deadline_s: float,
        *,
        dead_after_s: float | None = None,
        forget_after_s: float | None = None,
        max_failures: int = 3,
        bootstrap: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
        allow: Collection[str] | None = None,
    ) -> None:
        if liveness_deadline_s <= 0:
            raise ValueError("liveness_deadline_s must be positive")
        self.self_peer = dataclasses.replace(self_peer, source="self")
        self.liveness_deadline_s = liveness_deadline_s
        self.dead_after_s = dead_after_s if dead_after_s is not None else 2 * liveness_deadline_s
        self.forget_after_s = (
            forget_after_s if forget_after_s is not None else 10 * liveness_deadline_s
        )
        if not liveness_deadline_s <= self.dead_after_s <= self.forget_after_s:
            raise ValueError("need liveness_deadline_s <= dead_after_s <= forget_after_s")
        self.max_failures = max_failures
        self.bootstrap_addresses: tuple[tuple[str, int], ...] = tuple(
            _split_host_port(item) for item in bootstrap
        )
        self._clock = clock
        # network.allow_node_ids: anyone else is refused at every handshake, so it must
        # never enter membership (or the plan), where it would flap live/suspect.
        self.allow = frozenset(allow) if allow is not None else None
        self._entries: dict[str, _Entry] = {}
        # node id -> clock() of its goodbye: hearsay about a node that said
        # goodbye is ignored for a while, so stale exchange reports cannot
        # resurrect it; direct evidence always wins.
        self._departed: dict[str, float] = {}
        # node id -> (clock() of the refusal, reason): a peer whose certificate we refused
        # stays out of membership until forget_after_s has passed (then it may retry).
        self._refused: dict[str, tuple[float, str]] = {}
        self._ignored = _Ignored()
        self._listeners: list[Callable[[MembershipEvent], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    # ---- subscribing -------------------------------------------------------------

    def add_listener(self, listener: Callable[[MembershipEvent], None]) -> Callable[[], None]:
        """Call `listener` for every change (e.g. `queue.put_nowait`); returns an unsubscriber."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let deadlines fire on their own: one loop timer at the next deadline, no polling."""
        self._loop = loop
        self._reschedule()

    def unbind(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    # ---- reports -----------------------------------------------------------------

    def report(self, peer: PeerInfo) -> bool:
        """A peer seen via `peer.source`; returns False when it is ignored (self, not on
        the allow-list, other federation, other projection fingerprint, other protocol)."""
        if peer.node_id == self.self_peer.node_id:
            return False
        reason = self._incompatibility(peer)
        if reason is not None:
            self._ignored.add(reason, peer.node_id)
            return False
        now = self._clock()
        direct = peer.source in DIRECT_SOURCES
        if not direct and self._departed_recently(peer.node_id, now):
            return False
        if direct:
            self._departed.pop(peer.node_id, None)
        peer = dataclasses.replace(peer, last_seen=now)
        entry = self._entries.get(peer.node_id)
        if entry is not None and not self.admits(peer.node_id, peer.incarnation):
            # A second process with this id while the first is live: keep the first.
            self._ignored.add("identity_in_use", peer.node_id)
            return False
        events: list[MembershipEvent] = []
        if entry is None:
            state = PeerState.LIVE if direct else PeerState.SUSPECT
            entry = _Entry(peer=peer, state=state, alive_at=now, confirmed=direct)
            self._entries[peer.node_id] = entry
            events.append(MembershipEvent("added", peer, state))
        else:
            # Hearsay never overrides what the peer told us itself: it may be stale.
            if direct or entry.peer.source not in DIRECT_SOURCES:
                changed = _identity(entry.peer) != _identity(peer)
                entry.peer = peer
                if changed:
                    events.append(MembershipEvent("updated", peer, entry.state))
            if direct:
                events.extend(self._set_alive(entry, now))
        self._emit(events)
        return True

    def refuse(self, node_id: str, reason: str) -> None:
        """Its certificate was refused: drop it and ignore reports of it for forget_after_s."""
        self._refused[node_id] = (self._clock(), reason)
        self._ignored.add(reason, node_id)
        entry = self._entries.pop(node_id, None)
        if entry is not None:
            self._emit([MembershipEvent("removed", entry.peer, PeerState.DEAD)])

    def admits(self, node_id: str, incarnation: int) -> bool:
        """False when another incarnation of node_id is live here: a copy, or a restart
        whose previous life has not yet missed its liveness deadline."""
        entry = self._entries.get(node_id)
        if entry is None or not incarnation or not entry.peer.incarnation:
            return True
        return entry.peer.incarnation == incarnation or entry.state is not PeerState.LIVE

    def goodbye(self, node_id: str, incarnation: int = 0) -> None:
        """The peer announced it is leaving (mDNS goodbye): drop it now. A goodbye of
        another incarnation (a copy, an old life) never removes the live one."""
        entry = self._entries.get(node_id)
        if entry is None:
            return
        if incarnation and entry.peer.incarnation and incarnation != entry.peer.incarnation:
            log.info("ignored a goodbye of %s from another incarnation", node_id)
            return
        del self._entries[node_id]
        self._departed[node_id] = self._clock()
        self._emit([MembershipEvent("removed", entry.peer, PeerState.DEAD)])

    def mark_alive(self, node_id: str) -> bool:
        """A health check or exchange with the peer succeeded; False if the peer is unknown."""
        entry = self._entries.get(node_id)
        if entry is None:
            return False
        self._emit(self._set_alive(entry, self._clock()))
        return True

    def mark_failed(self, node_id: str) -> bool:
        """A health check or exchange with the peer failed; False if the peer is unknown."""
        entry = self._entries.get(node_id)
        if entry is None:
            return False
        entry.failures += 1
        target = PeerState.DEAD if entry.failures >= self.max_failures else PeerState.SUSPECT
        if entry.state is PeerState.DEAD:
            target = PeerState.DEAD
        self._emit(self._set_state(entry, target))
        return True

    def refresh(self) -> list[MembershipEvent]:
        """Apply deadlines at clock() now; returns (and emits) the resulting events."""
        now = self._clock()
        events: list[MembershipEvent] = []
        for node_id, entry in list(self._entries.items()):
            age = now - entry.alive_at
            if age > self.forget_after_s and entry.state is PeerState.DEAD:
                del self._entries[node_id]
                events.append(MembershipEvent("removed", entry.peer, PeerState.DEAD))
            elif age > self.dead_after_s:
                events.extend(self._set_state(entry, PeerState.DEAD))
            elif age > self.liveness_deadline_s and entry.state is PeerState.LIVE:
                events.extend(self._set_state(entry, PeerState.SUSPECT))
        self._departed = {
            node_id: at for node_id, at in self._departed.items() if now - at <= self.dead_after_s
        }
        self._emit(events)
        return events

    def next_deadline(self) -> float | None:
        """clock() time at which `refresh()` would next change something; None if never."""
        deadlines: list[float] = []
        for entry in self._entries.values():
            if entry.state is PeerState.LIVE:
                deadlines.append(entry.alive_at + self.liveness_deadline_s)
            elif entry.state is PeerState.SUSPECT:
                deadlines.append(entry.alive_at + self.dead_after_s)
            else:
                deadlines.append(entry.alive_at + self.forget_after_s)
        return min(deadlines) if deadlines else None

    # ---- reading -----------------------------------------------------------------

    def state(self, node_id: str) -> PeerState | None:
        entry = self._entries.get(node_id)
        return entry.state if entry is not None else None

    def peer(self, node_id: str) -> PeerInfo | None:
        entry = self._entries.get(node_id)
        return entry.peer if entry is not None else None

    def peers(self) -> dict[str, tuple[PeerInfo, PeerState]]:
        """Every known peer (not self) with its state, in node-id order."""
        return {nid: (e.peer, e.state) for nid, e in sorted(self._entries.items())}

    def live_members(self, *, include_suspect: bool = False) -> list[PeerInfo]:
        """Self plus LIVE peers (optionally SUSPECT ones too), sorted by node id.

        Sorted so that nodes holding the same view plan the same topology.
        """
        wanted = {PeerState.LIVE, PeerState.SUSPECT} if include_suspect else {PeerState.LIVE}
        members = [self.self_peer]
        members += [e.peer for e in self._entries.values() if e.state in wanted]
        return sorted(members, key=lambda p: p.node_id)

    def counts(self) -> dict[str, int]:
        """Peers by state, for the `solora_peers{state=...}` gauge."""
        result = {state.value: 0 for state in PeerState}
        for entry in self._entries.values():
            result[entry.state.value] += 1
        return result

    def ignored_counts(self) -> dict[str, int]:
        """Distinct node ids ignored, by reason (federation, fingerprint, protocol, malformed)."""
        return self._ignored.counts()

    def ignored(self, reason: str) -> frozenset[str]:
        """The node ids (or mDNS names, for "malformed") ignored for `reason`."""
        return self._ignored.of(reason)

    def count_ignored(self, reason: str, node_id: str) -> None:
        """Record a peer dropped before it became a PeerInfo (e.g. malformed TXT record)."""
        self._ignored.add(reason, node_id)

    def undialed_bootstrap(self) -> list[tuple[str, int]]:
        """Bootstrap addresses that no LIVE/SUSPECT peer answers for yet: the node dials
        these and reports the handshake's PeerInfo with source "bootstrap"."""
        known = {
            (e.peer.host, e.peer.grpc_port)
            for e in self._entries.values()
            if e.state is not PeerState.DEAD
        }
        return [addr for addr in self.bootstrap_addresses if addr not in known]

    # ---- internals ---------------------------------------------------------------

    def _incompatibility(self, peer: PeerInfo) -> str | None:
        own = self.self_peer
        if self.allow is not None and peer.node_id not in self.allow:
            return "not_allowed"
        refused = self._refused.get(peer.node_id)
        if refused is not None:
            if self._clock() - refused[0] <= self.forget_after_s:
                return refused[1]
            del self._refused[peer.node_id]
        if peer.federation != own.federation:
            return "federation"
        if peer.fingerprint != own.fingerprint:
            return "fingerprint"
        if peer.protocol != own.protocol:
            return "protocol"
        return None

    def _departed_recently(self, node_id: str, now: float) -> bool:
        at = self._departed.get(node_id)
        return at is not None and now - at <= self.dead_after_s

    def _set_alive(self, entry: _Entry, now: float) -> list[MembershipEvent]:
        entry.alive_at = now
        entry.failures = 0
        entry.confirmed = True
        return self._set_state(entry, PeerState.LIVE)

    def _set_state(self, entry: _Entry, state: PeerState) -> list[MembershipEvent]:
        if entry.state is state:
            return []
        log.info("peer %s: %s -> %s", entry.peer.node_id, entry.state.value, state.value)
        entry.state = state
        return [MembershipEvent("state", entry.peer, state)]

    def _emit(self, events: list[MembershipEvent]) -> None:
        for event in events:
            for listener in list(self._listeners):
                try:
                    listener(event)
                except Exception:
                    # A broken subscriber must not stop membership tracking.
                    log.exception("membership listener failed on %s", event.kind)
        self._reschedule()

    def _reschedule(self) -> None:
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.next_deadline()
        if deadline is None:
            return
        # A hair past the deadline so the strict `age > deadline` test holds on wake-up.
        delay = max(0.0, deadline - self._clock()) + 1e-3
        self._timer = self._loop.call_later(delay, self.refresh)


def _identity(peer: PeerInfo) -> tuple[object, ...]:
    """The fields whose change matters to others (not source or timestamp)."""
    return (
        peer.federation,
        peer.task,
        peer.host,
        peer.grpc_port,
        peer.metrics_port,
        peer.protocol,
        peer.fingerprint,
    )


def _split_host_port(item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    return host.strip("[]"), int(port)
