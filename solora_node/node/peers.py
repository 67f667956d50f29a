"""The daemon's peers: addresses, peer exchange, liveness checks, bootstrap and re-dialling.

mDNS cannot tell who vanished (PTR TTLs are long), so liveness comes from gRPC health
checks with deadlines; peers the membership view forgot are re-dialled, slowly, because
nobody would announce them again while their records are cached.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from solora_node.config import NodeConfig
from solora_node.metrics import NodeMetrics
from solora_node.net.client import PeerClient
from solora_node.net.membership import MembershipView, PeerInfo, PeerState
from solora_node.net.tls_watch import CERTIFICATE_REFUSALS
from solora_node.protocol import messages as wire
from solora_node.protocol.messages import PROTOCOL_VERSION

log = logging.getLogger("solora_node.node")

MAX_FORGOTTEN = 256  # forgotten peers still re-dialled (bounded against id floods)
REDIAL_EVERY = 5  # liveness intervals between re-dials of forgotten peers


class Peers:
    """Who this node can dial, and the loops that keep that knowledge true."""

    def __init__(
        self,
        cfg: NodeConfig,
        view: MembershipView,
        client: PeerClient,
        fingerprint: str,
        stop: asyncio.Event,
    ) -> None:
        self.cfg = cfg
        self.node_id = cfg.node.id
        self.view = view
        self.client = client
        self.fingerprint = fingerprint
        self._stop = stop
        # Peers the view forgot (dead too long), still re-dialled until one answers.
        self._forgotten: collections.OrderedDict[str, PeerInfo] = collections.OrderedDict()
        view.add_listener(self._on_membership)

    # ------------------------------------------------------------------ lookups

    def address(self, node_id: str) -> str | None:
        peer = self.view.peer(node_id)
        if peer is None or not peer.host:
            return None
        return _join(peer.host, peer.grpc_port)

    def task_of(self, node_id: str) -> str:
        peer = self.view.peer(node_id)
        return peer.task if peer is not None else ""

    def state_name(self, node_id: str) -> str:
        state: PeerState | None = self.view.state(node_id)
        return state.value if state is not None else "unknown"

    def known_peers(self) -> Iterable[wire.PeerAddress]:
        """Peer exchange: the live peers we would tell others about."""
        for peer in self.view.live_members():
            if peer.node_id != self.node_id and peer.host:
                yield wire.PeerAddress(
                    node_id=peer.node_id, address=f"{peer.host}:{peer.grpc_port}", task=peer.task
                )

    # ------------------------------------------------------------------ what peers say

    def on_peer(self, ctx: wire.PeerContext) -> None:
        """Every accepted hello: the peer itself (direct) and the peers it knows (hearsay)."""
        hello = ctx.hello
        # Only the address the peer advertises is dialable: ctx.address is gRPC's view of
        # the caller ("ipv4:HOST:SOURCE_PORT"), whose port is ephemeral.
        host, port = split_address(hello.address) or ("", 0)
        if host:
            self.view.report(
                PeerInfo(
                    node_id=hello.node_id,
                    federation=hello.federation_id,
                    task=hello.task,
                    host=host,
                    grpc_port=port,
                    metrics_port=0,
                    protocol=hello.protocol_version,
                    fingerprint=hello.fingerprint,
                    source="bootstrap",
                    incarnation=hello.incarnation,
                )
            )
        for known in hello.peers:
            split = split_address(known.address)
            if split is None or known.node_id == self.node_id:
                continue
            self.view.report(
                PeerInfo(
                    node_id=known.node_id,
                    federation=self.cfg.federation.id,
                    task=known.task,
                    host=split[0],
                    grpc_port=split[1],
                    metrics_port=0,
                    protocol=PROTOCOL_VERSION,
                    fingerprint=self.fingerprint,
                    source="exchange",
                )
            )

    def record_exchanges(self, results: Iterable[wire.ExchangeResult]) -> None:
        for result in results:
            if result.ok:
                self.view.mark_alive(result.peer)
            elif result.reason in CERTIFICATE_REFUSALS:  # it would only flap: leave it out
                self.view.refuse(result.peer, result.reason.value)
            else:
                self.view.mark_failed(result.peer)

    def _on_membership(self, event: Any) -> None:
        if event.kind == "removed":
            self._forgotten[event.peer.node_id] = event.peer
            self._forgotten.move_to_end(event.peer.node_id)
            while len(self._forgotten) > MAX_FORGOTTEN:
                self._forgotten.popitem(last=False)
        elif event.kind == "added":
            self._forgotten.pop(event.peer.node_id, None)

    # ------------------------------------------------------------------ loops

    async def _redial_forgotten(self) -> None:
        """A handshake with each forgotten peer; an answer reports it to the view again."""
        for node_id, peer in list(self._forgotten.items()):
            address = _join(peer.host, peer.grpc_port)
            outcome = await self.client.handshake(address, node_id, timeout=2.0)
            if outcome.ok:
                log.info("forgotten peer %s answered again; it rejoins", node_id)
                self._forgotten.pop(node_id, None)

    async def liveness_loop(self, metrics: NodeMetrics) -> None:
        """Health-check every known peer with a deadline: mDNS cannot tell who vanished."""
        interval = self.cfg.network.health_interval_s
        checks = 0
        while not self._stop.is_set():
            checks += 1
            if self._forgotten and checks % REDIAL_EVERY == 0:
                await self._redial_forgotten()
            peers = list(self.view.peers())
            results = await asyncio.gather(*(self._check(p) for p in peers))
            for node_id, ok in zip(peers, results, strict=True):
                if ok:
                    self.view.mark_alive(node_id)
                else:
                    self.view.mark_failed(node_id)
            metrics.set_peers(**self.view.counts())
            await wait_or_stop(self._stop, interval)

    async def _check(self, node_id: str) -> bool:
        address = self.address(node_id)
        if address is None:
            return False
        return await self.client.healthy(
            address, node_id, timeout=min(2.0, self.cfg.network.liveness_deadline_s)
        )

    async def bootstrap_loop(self) -> None:
        """Dial configured bootstrap peers until each answers (handshake -> peer exchange)."""
        interval = self.cfg.network.health_interval_s
        while not self._stop.is_set():
            for host, port in self.view.undialed_bootstrap():
                outcome = await self.client.handshake(f"{host}:{port}")
                if not outcome.ok:
                    log.debug("bootstrap %s:%d: %s", host, port, outcome.reason.value)
            await wait_or_stop(self._stop, interval)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_address(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


async def wait_or_stop(event: asyncio.Event, seconds: float) -> None:
    """Sleep that ends early when the node is stopping (no bare time.sleep loops)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
