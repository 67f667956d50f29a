"""Discovery over real mDNS, pinned to loopback: nodes in one process find each other,
ignore other federations and fingerprints, and drop a peer when it says goodbye.

Every Discovery here uses interfaces=["127.0.0.1"], so nothing is multicast on the
host's real interfaces. Multicast over lo works on Linux without setting the
MULTICAST flag on lo (checked on the project machines); federation ids are random
per test so that concurrent test runs on the same machine never see each other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from solora_node.config import NodeConfig
from solora_node.net.discovery import (
    SERVICE_TYPE,
    Advertisement,
    Discovery,
    DiscoveryError,
    advertise_hosts,
    peer_from_txt,
    zeroconf_interfaces,
)
from solora_node.net.membership import MembershipEvent, MembershipView, PeerInfo

LOOPBACK = ["127.0.0.1"]
DEADLINE_S = 10.0  # generous: probing alone takes ~1.2 s, CI machines are busy


def _advert(
    node_id: str, federation: str, *, fingerprint: str = "fp-1", port: int = 50001
) -> Advertisement:
    return Advertisement(
        node_id=node_id,
        federation=federation,
        task="arithmetic" if port % 2 else "topic",
        grpc_port=port,
        metrics_port=port + 1000,
        protocol=1,
        fingerprint=fingerprint,
        hosts=("127.0.0.1",),
    )


class _Node:
    def __init__(self, advert: Advertisement) -> None:
        self.advert = advert
        self.view = MembershipView(advert.as_peer(), liveness_deadline_s=30.0)
        self.events: list[MembershipEvent] = []
        self.changed = asyncio.Event()
        self.view.add_listener(self._on_event)
        self.discovery = Discovery(advert, self.view, interfaces=LOOPBACK)

    def _on_event(self, event: MembershipEvent) -> None:
        self.events.append(event)
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait on membership events (never a fixed sleep) until `predicate` holds."""

        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(wait(), DEADLINE_S)
        except asyncio.TimeoutError:
            pytest.fail(
                f"{self.advert.node_id}: {what} not within {DEADLINE_S} s; events {self.events}"
            )


async def _eventually(predicate: Callable[[], bool], what: str) -> None:
    """For facts that emit no event (ignored peers): poll with a deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE_S
    while not predicate():
        if loop.time() > end:
            pytest.fail(f"{what} not within {DEADLINE_S} s")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def _running(*adverts: Advertisement) -> AsyncIterator[list[_Node]]:
    nodes = [_Node(a) for a in adverts]
    try:
        await asyncio.gather(*(n.discovery.start() for n in nodes))
        yield nodes
    finally:
        await asyncio.gather(*(n.discovery.close() for n in nodes), return_exceptions=True)


def _new_federation() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def _knows(node: _Node, node_ids: set[str]) -> bool:
    return node_ids <= set(node.view.peers())


def test_nodes_find_each_other_with_txt_fields() -> None:
    async def scenario() -> None:
        fed = _new_federation()
        adverts = [_advert(f"n{i}.{fed}", fed, port=50001 + i) for i in range(3)]
        # A host name is resolved to address records; peers see the IPv4 address.
        adverts[1] = dataclasses.replace(adverts[1], hosts=("localhost",))
        async with _running(*adverts) as nodes:
            for node in nodes:
                others = {a.node_id for a in adverts} - {node.advert.node_id}
                await node.until(functools.partial(_knows, node, others), "both peers seen")
            a, b = nodes[0], adverts[1]
            seen = a.view.peer(b.node_id)
            assert seen is not None
            assert (seen.federation, seen.task, seen.fingerprint) == (
                b.federation,
                b.task,
                "fp-1",
            )
            assert (seen.host, seen.grpc_port, seen.metrics_port) == (
                "127.0.0.1",
                b.grpc_port,
                b.metrics_port,
            )
            assert (seen.protocol, seen.source) == (1, "mdns")
            live = [p.node_id for p in a.view.live_members()]
            assert live == sorted(x.node_id for x in adverts)  # self included
            assert a.advert.node_id not in a.view.peers()  # never itself

    asyncio.run(scenario())


def test_goodbye_removes_peer() -> None:
    async def scenario() -> None:
        fed = _new_federation()
        a, b = _advert("stay", fed, port=50011), _advert("leave", fed, port=50012)
        async with _running(a, b) as (node_a, node_b):
            await node_a.until(lambda: node_a.view.peer("leave") is not None, "peer seen")
            await node_b.discovery.close()
            await node_a.until(
                lambda: any(
                    e.kind == "removed" and e.peer.node_id == "leave" for e in node_a.events
                ),
                "goodbye seen",
            )
            assert node_a.view.peer("leave") is None

    asyncio.run(scenario())


def test_other_federation_and_fingerprint_ignored() -> None:
    async def scenario() -> None:
        fed, other = _new_federation(), _new_federation()
        mine = _advert("mine", fed, port=50021)
        twin = _advert("twin", fed, port=50023)
        foreign = _advert("foreign", other, port=50025)
        mismatched = _advert("mismatched", fed, fingerprint="fp-2", port=50027)
        async with _running(mine, twin, foreign, mismatched) as (node, *_):
            await node.until(lambda: node.view.peer("twin") is not None, "same federation seen")
            await _eventually(
                lambda: (
                    "foreign" in node.view.ignored("federation")
                    and "mismatched" in node.view.ignored("fingerprint")
                ),
                "foreign and mismatched peers ignored",
            )
            assert set(node.view.peers()) == {"twin"}

    asyncio.run(scenario())


def test_duplicate_node_id_refused() -> None:
    async def scenario() -> None:
        fed = _new_federation()
        async with _running(_advert("same", fed, port=50031)):
            clash = _Node(_advert("same", fed, port=50033))
            with pytest.raises(DiscoveryError, match="node ids must be unique"):
                await clash.discovery.start()
            await clash.discovery.close()

    asyncio.run(scenario())


def test_interface_setting_and_txt_parsing() -> None:
    assert zeroconf_interfaces(["127.0.0.1"]) == ["127.0.0.1"]
    with pytest.raises(DiscoveryError, match="'eth0' is not an IP address"):
        zeroconf_interfaces(["eth0"])
    assert advertise_hosts(None, "0.0.0.0", ["127.0.0.1"]) == ("127.0.0.1",)
    assert advertise_hosts("10.0.0.5", "0.0.0.0", "all") == ("10.0.0.5",)
    assert advertise_hosts(None, "10.0.0.6", "all") == ("10.0.0.6",)
    config = NodeConfig.model_validate(
        {
            "node": {"id": "edge-1"},
            "network": {"insecure": True, "listen_host": "0.0.0.0"},
            "discovery": {"interfaces": ["127.0.0.1"]},
        }
    )
    from_config = Advertisement.from_config(
        config, grpc_port=7070, metrics_port=0, protocol=1, fingerprint="fp"
    )
    assert from_config.hosts == ("127.0.0.1",) and from_config.node_id == "edge-1"
    assert from_config.txt()["fed"] == config.federation.id
    with pytest.raises(DiscoveryError, match="bound gRPC port"):
        Discovery(dataclasses.replace(from_config, grpc_port=0), None, interfaces=LOOPBACK)  # type: ignore[arg-type]

    advert = _advert("a.b", "fed", port=50041)
    assert "." not in advert.instance_name and len(advert.instance_name) <= 63
    txt = {k.encode(): v.encode() for k, v in advert.txt().items()}
    parsed = peer_from_txt(txt, "127.0.0.1")
    assert parsed == PeerInfo(
        "a.b", "fed", advert.task, "127.0.0.1", 50041, 51041, 1, "fp-1", "mdns"
    )
    with pytest.raises(ValueError, match="lacks fp"):
        peer_from_txt({k: v for k, v in txt.items() if k != b"fp"}, "127.0.0.1")
    with pytest.raises(ValueError, match="grpc"):
        peer_from_txt({**txt, b"grpc": b"x"}, "127.0.0.1")
    assert SERVICE_TYPE == "_solora._tcp.local."
