"""Hostile and broken input against a running `solora-node run` (TLS on), end to end.

One node (task arithmetic) runs alone, so every refusal in its metrics is ours and its
copy of the *other* task's block (reverse) only changes when a peer's block is applied:
bit-identical checkpoints of that block before and after prove nothing bad got in.
The attacker, "mallory", holds a valid certificate of the federation CA (the worst case
after TLS: a member gone rogue); other tests use no certificate or another CA's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from solora_node._proto import exchange_pb2, handshake_pb2, service_pb2_grpc
from solora_node.net.client import PeerClient
from solora_node.net.convert import hello_to_proto
from solora_node.net.limits import WireLimits
from solora_node.net.security import TlsMaterial, init_ca, issue_node_cert, load_tls_dir
from solora_node.protocol.blocks import BlockDelta, MaskRecord
from solora_node.protocol.reasons import Reason
from solora_node.testbed.local import LocalFederation, NodeSpec
from solora_node.testing.workload import random_mask
from tests.integration.federation import TINY_BASE, scrape, wait_until
from tests.reliability.hostile import (
    TargetFacts,
    adapter_mask,
    block_under,
    exchange_with,
    first_layer_size,
    hostile_store,
    open_fds,
    record,
    rss_kib,
    run,
    target_facts,
    with_layer,
)
from tests.support.faults import Fault, faulty_session

pytestmark = pytest.mark.slow
TARGET = "t1"
OWN, FOREIGN = "arithmetic", "reverse"
# Small chunks on the attacker's side so that every block spans several chunks.
ATTACKER_LIMITS = WireLimits(chunk_bytes=256, max_message_bytes=4 << 20)
TARGET_NETWORK = {
    "max_message_bytes": 65536,
    "chunk_bytes": 16384,
    "chunk_deadline_s": 2.0,
    "exchange_deadline_s": 5.0,
    "norm_bound": 100.0,
}


@dataclass
class Target:
    fed: LocalFederation
    root: Path
    mallory: TlsMaterial
    facts: TargetFacts
    baseline: dict[str, torch.Tensor]  # the target's checkpointed reverse block

    @property
    def node(self):  # type: ignore[no-untyped-def]
        return self.fed.nodes[TARGET]

    @property
    def address(self) -> str:
        return self.node.address

    def metrics(self) -> dict[str, float]:
        return scrape(self.node.metrics_port)

    def refused(self) -> dict[str, float]:
        prefix = "solora_deltas_refused_total{reason="
        return {k[len(prefix) : -1]: v for k, v in self.metrics().items() if k.startswith(prefix)}

    def round(self) -> int:
        return int(self.metrics()["solora_round{}"])

    def foreign_block_after(self, round_: int) -> dict[str, torch.Tensor]:
        """The checkpointed reverse block of a round that began after round `round_` ended.

        The round metric is set after the checkpoint is written, so checkpoint round_ + 1
        may predate what we just sent: wait for round_ + 2."""
        found: dict[str, dict[str, torch.Tensor]] = {}

        def newer() -> bool:
            facts = target_facts(self.node.data_dir)
            found["b"] = facts.blocks[FOREIGN]
            return facts.round > round_ + 1

        wait_until(newer, 30, f"a checkpoint after round {round_}")
        return found["b"]

    def assert_foreign_unchanged(self) -> None:
        after = self.foreign_block_after(self.round())
        assert after.keys() == self.baseline.keys()
        for name, tensor in after.items():
            assert torch.equal(tensor, self.baseline[name]), f"{FOREIGN} block changed in {name}"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("hostile")
    base = {
        **TINY_BASE,
        "discovery": {"mdns": False},
        "network": {**TINY_BASE["network"], **TARGET_NETWORK},
    }
    fed = LocalFederation(root, [NodeSpec(TARGET, OWN)], base, tls=True)
    issue_node_cert(root / "tls", "mallory", force=True)
    with fed:
        fed.start()
        fed.wait_ready()
        wait_until(
            lambda: scrape(fed.nodes[TARGET].metrics_port)["solora_round{}"] >= 3, 60, "round 3"
        )
        facts = target_facts(fed.nodes[TARGET].data_dir)
        t = Target(fed, root, load_tls_dir(root / "tls", "mallory"), facts, facts.blocks[FOREIGN])
        # Sanity: untouched by training, the foreign block is stable across rounds.
        t.assert_foreign_unchanged()
        yield t
        codes = fed.stop(timeout=15)
    assert codes == {TARGET: 0}, fed.tail(TARGET, 50)


_versions = iter(range(10_000, 1_000_000))


def foreign_mask(t: Target) -> MaskRecord:
    return adapter_mask(FOREIGN, t.facts.layouts[FOREIGN], 0.5, seed=7)


def bad_values(kind: str) -> Callable[[BlockDelta], BlockDelta]:
    def make(block: BlockDelta) -> BlockDelta:
        n = first_layer_size(block)
        if kind == "shape":
            return with_layer(block, np.zeros(n - 1, np.float32))
        if kind == "dtype":
            return with_layer(block, np.zeros(n, np.float32), encoding="float32")
        values = np.zeros(n, np.float32)
        values[n // 2] = {"nan": np.nan, "inf": np.inf, "norm": 6e4}[kind]
        return with_layer(block, values)

    return make


def attack(
    t: Target,
    *,
    fault: Fault = Fault.NONE,
    corrupt: Callable[[BlockDelta], BlockDelta] | None = None,
    mask: MaskRecord | None = None,
    send_mask: bool = True,
    mask_seed: int = 7,
    task: str = FOREIGN,
    round_: int | None = None,
    **store_kw: object,
):  # type: ignore[no-untyped-def]
    mask = mask or adapter_mask(FOREIGN, t.facts.layouts[FOREIGN], 0.5, seed=mask_seed)
    block = block_under(
        mask, round_=round_ if round_ is not None else next(_versions), origin="mallory"
    )
    if corrupt is not None:
        block = corrupt(block)
    store = hostile_store(
        t.facts,
        node_id=str(store_kw.pop("node_id", "mallory")),
        task=task,
        blocks=[block],
        masks=[mask] if send_mask else [],
        **store_kw,
    )
    before = t.refused()
    result = exchange_with(t.address, TARGET, store, t.mallory, fault=fault, limits=ATTACKER_LIMITS)
    after = t.refused()
    counted = {r: after[r] - before.get(r, 0) for r in after if after[r] != before.get(r, 0)}
    return result, counted


@pytest.mark.parametrize(
    "kw, reason",
    [
        ({"federation_id": "another-federation"}, Reason.OTHER_FEDERATION),
        ({"fingerprint": "other-projections"}, Reason.FINGERPRINT_MISMATCH),
        ({"node_id": "a2"}, Reason.IDENTITY_MISMATCH),  # mallory's cert, another node's id
        ({"node_id": TARGET}, Reason.IDENTITY_MISMATCH),  # ... or the target's own id
    ],
    ids=["other-federation", "fingerprint", "claims-other-id", "claims-target-id"],
)
def test_incompatible_or_lying_peer_is_refused_at_handshake(
    target: Target, kw: dict[str, str], reason: Reason
) -> None:
    result, counted = attack(target, **kw)
    assert result.reason is reason, result
    assert counted == {reason.value: 1}
    record(f"handshake:{reason.value}", observed=result.reason.value, counted=counted)
    target.assert_foreign_unchanged()


ITEM_CASES = [
    ("wrong-shape", {"corrupt": bad_values("shape")}, Reason.WRONG_SHAPE),
    ("wrong-dtype", {"corrupt": bad_values("dtype")}, Reason.WRONG_DTYPE),
    ("nan", {"corrupt": bad_values("nan")}, Reason.NOT_FINITE),
    ("inf", {"corrupt": bad_values("inf")}, Reason.NOT_FINITE),
    ("norm-above-bound", {"corrupt": bad_values("norm")}, Reason.NORM_TOO_LARGE),
    ("declared-oversized", {"fault": Fault.INFLATED_SIZE}, Reason.TOO_LARGE),
    ("corrupted-chunk", {"fault": Fault.CORRUPT_CHUNK}, Reason.CHECKSUM_MISMATCH),
    ("garbage-bytes", {"fault": Fault.GARBAGE}, Reason.MALFORMED),
    ("duplicate-chunk", {"fault": Fault.DUPLICATE_CHUNK}, Reason.BAD_CHUNK),
    ("truncated-by-done", {"fault": Fault.EARLY_DONE}, Reason.TRUNCATED),
    ("silent-mid-item", {"fault": Fault.STALL}, Reason.TIMEOUT),
    ("mask-never-sent", {"send_mask": False, "mask_seed": 99}, Reason.MASK_UNKNOWN),
]


@pytest.mark.parametrize("kw, reason", [c[1:] for c in ITEM_CASES], ids=[c[0] for c in ITEM_CASES])
def test_bad_foreign_block_is_refused_counted_and_changes_nothing(
    target: Target, kw: dict[str, object], reason: Reason
) -> None:
    result, counted = attack(target, **kw)  # type: ignore[arg-type]
    assert result.refused_by_peer == {reason: 1}, result
    assert counted == {reason.value: 1}
    record(f"item:{reason.value}", observed=dict(result.refused_by_peer), counted=counted)
    target.assert_foreign_unchanged()


def test_mask_whose_id_is_not_its_content_hash_is_refused_by_the_store(target: Target) -> None:
    # Shapes are right, so the wire takes the mask; the node checks the hash before use.
    mask = random_mask(FOREIGN, target.facts.layouts[FOREIGN], 0.5, seed=3)
    result, counted = attack(target, mask=mask)
    assert result.refused_by_peer == {Reason.REFUSED_BY_STORE: 1}, result
    assert counted == {Reason.REFUSED_BY_STORE.value: 1}
    target.assert_foreign_unchanged()


def test_own_task_block_under_another_mask_is_refused(target: Target) -> None:
    mask = adapter_mask(OWN, target.facts.layouts[OWN], 0.5, seed=11)
    result, counted = attack(target, mask=mask, task=OWN)
    assert result.refused_by_peer == {Reason.MASK_MISMATCH: 1}, result
    assert counted == {Reason.MASK_MISMATCH.value: 1}


def test_message_above_the_grpc_limit_breaks_the_stream_and_is_counted(target: Target) -> None:
    result, counted = attack(target, fault=Fault.OVERSIZED_MESSAGE)
    assert not result.ok and result.reason in (Reason.TOO_LARGE, Reason.UNAVAILABLE), result
    # gRPC drops the message before our code sees it; the node counts the item it lost.
    assert counted == {Reason.TRUNCATED.value: 1}
    target.assert_foreign_unchanged()


def test_stale_replayed_and_unknown_task_blocks_are_not_even_transferred(target: Target) -> None:
    now = target.round()
    mask = adapter_mask(OWN, target.facts.layouts[OWN], 0.5, seed=11)
    stale, counted = attack(target, mask=mask, task=OWN, round_=max(0, now - 50))
    assert stale.ok and stale.items_sent == 0 and not stale.refused_by_peer, stale
    alien = adapter_mask("nosuchtask", target.facts.layouts[FOREIGN], 0.5, seed=1)
    unknown, counted2 = attack(target, mask=alien, task=FOREIGN)
    assert unknown.ok and unknown.items_sent == 0 and not unknown.refused_by_peer, unknown
    # Not wanted means no bytes of the block moved; nothing is counted as a refusal.
    assert counted == {} and counted2 == {}
    record("not-wanted", stale_sent=stale.items_sent, unknown_sent=unknown.items_sent)
    target.assert_foreign_unchanged()


def _tls(ca: bytes, cert: bytes | None, key: bytes | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def _raw_handshake(address: str, creds: grpc.ChannelCredentials | None) -> grpc.StatusCode | None:
    async def go() -> grpc.StatusCode | None:
        options = [("grpc.ssl_target_name_override", TARGET)]
        channel = (
            grpc.aio.secure_channel(address, creds, options=options)
            if creds is not None
            else grpc.aio.insecure_channel(address)
        )
        try:
            stub = service_pb2_grpc.SoloraStub(channel)  # type: ignore[no-untyped-call]
            await stub.Handshake(handshake_pb2.Hello(node_id="mallory"), timeout=5)
        except grpc.aio.AioRpcError as err:
            return err.code()
        finally:
            await channel.close()
        return None

    return run(go())


def test_strangers_are_stopped_by_mutual_tls(target: Target, tmp_path: Path) -> None:
    init_ca(tmp_path / "evil", "it-fed", force=True)  # same federation name, another CA
    issue_node_cert(tmp_path / "evil", "mallory", force=True)
    evil = load_tls_dir(tmp_path / "evil", "mallory")
    ca = target.mallory.ca_cert
    before = target.refused()
    outcomes = {
        # A client certificate from another CA: the node's TLS refuses it.
        "other-ca-client-cert": _raw_handshake(target.address, _tls(ca, evil.cert, evil.key)),
        # No client certificate at all.
        "no-client-cert": _raw_handshake(target.address, _tls(ca, None, None)),
        # Plaintext gRPC to the TLS port.
        "plaintext": _raw_handshake(target.address, None),
    }
    assert all(code is grpc.StatusCode.UNAVAILABLE for code in outcomes.values()), outcomes
    # The real client with a certificate of another CA gets a reason, too.
    store = hostile_store(target.facts, node_id="mallory", task=FOREIGN)
    result = exchange_with(target.address, TARGET, store, evil)
    assert result.reason in (Reason.UNKNOWN_CA, Reason.UNAVAILABLE), result
    # Refused below gRPC: the node's handlers never ran, so its refusal metrics are unchanged
    # (the TLS layer does not report to the application).
    assert target.refused() == before
    record("tls", outcomes={k: str(v) for k, v in outcomes.items()}, client=result.reason.value)
    target.assert_foreign_unchanged()


def test_an_exchange_that_does_not_start_with_a_hello_is_a_protocol_error(target: Target) -> None:
    async def go() -> exchange_pb2.Frame:
        client = PeerClient(
            hostile_store(target.facts, node_id="mallory", task=FOREIGN), tls=target.mallory
        )
        try:
            call = client.stub(target.address, TARGET).Exchange()
            await call.write(exchange_pb2.Frame(chunk=exchange_pb2.Chunk(data=b"\0" * 100)))
            frame: exchange_pb2.Frame = await call.read()
            call.cancel()
            return frame
        finally:
            await client.close()

    before = target.refused()
    reply = run(go())
    assert Reason.from_proto(reply.hello_reply.reason) is Reason.PROTOCOL_ERROR
    after = target.refused()
    record("first-frame-not-hello", counted=after["protocol_error"] - before["protocol_error"])
    assert after["protocol_error"] == before["protocol_error"] + 1


def test_a_flood_of_handshakes_and_streams_is_bounded_and_the_node_keeps_going(
    target: Target,
) -> None:
    pid = target.node.proc.pid  # type: ignore[union-attr]
    fds_before, rss_before, round_before = open_fds(pid), rss_kib(pid), target.round()
    facts = target.facts
    hello = hello_to_proto(hostile_store(facts, node_id="mallory", task=FOREIGN).hello())
    mask = foreign_mask(target)

    async def flood() -> tuple[list[Reason], list[Reason], float]:
        client = PeerClient(
            hostile_store(facts, node_id="mallory", task=FOREIGN), tls=target.mallory
        )
        stallers = []
        for i in range(12):
            store = hostile_store(
                facts,
                node_id="mallory",
                task=FOREIGN,
                masks=[mask],
                blocks=[block_under(mask, round_=next(_versions), origin=f"m{i}")],
            )
            c = PeerClient(store, tls=target.mallory, limits=ATTACKER_LIMITS)
            c.session_class = faulty_session(Fault.STALL, stall_s=8.0)
            stallers.append(c)
        started = time.monotonic()
        try:
            stub = client.stub(target.address, TARGET)
            streams = asyncio.gather(*(c.exchange(target.address, TARGET) for c in stallers))
            replies = await asyncio.gather(
                *(stub.Handshake(hello, timeout=20) for _ in range(400)), return_exceptions=True
            )
            hs = [
                Reason.from_proto(r.reason)
                if not isinstance(r, BaseException)
                else Reason.UNAVAILABLE
                for r in replies
            ]
            results = await streams
            return hs, [r.reason for r in results], time.monotonic() - started
        finally:
            for c in [client, *stallers]:
                await c.close()

    handshakes, streams, seconds = run(flood(), timeout=90)
    assert handshakes.count(Reason.OK) == len(handshakes)  # a member may say hello often
    # At most max_streams_per_peer (4) streams per identity; the rest are BUSY at once.
    assert streams.count(Reason.BUSY) >= len(streams) - 4, streams
    round_after = target.round()
    assert round_after > round_before + 5, (round_before, round_after)  # it kept training

    def settled() -> bool:
        return open_fds(pid) <= fds_before + 8

    wait_until(settled, 30, "file descriptors back to their level before the flood")
    rss_after = rss_kib(pid)
    record(
        "flood",
        handshakes=len(handshakes),
        streams=len(streams),
        busy=streams.count(Reason.BUSY),
        seconds=round(seconds, 1),
        rounds_during=round_after - round_before,
        fds=(fds_before, open_fds(pid)),
        rss_kib=(rss_before, rss_after),
    )
    assert rss_after < rss_before + 64 * 1024, (rss_before, rss_after)
    target.assert_foreign_unchanged()


def test_control_a_good_block_is_applied_and_its_replays_are_not(target: Target) -> None:
    """Last: the same path with nothing wrong changes the block, so the checks above were live."""
    mask = foreign_mask(target)
    result, counted = attack(target, mask=mask, round_=2_000_000)
    assert result.ok and result.items_sent >= 1 and not result.refused_by_peer, result
    applied = target.foreign_block_after(target.round())
    assert any(not torch.equal(applied[n], target.baseline[n]) for n in applied)
    for round_ in (2_000_000, 1_999_999):  # the same version again, then an older one
        replay, counted = attack(target, mask=mask, round_=round_)
        assert replay.ok and replay.items_sent == 0 and counted == {}, replay
    again = target.foreign_block_after(target.round())
    assert all(torch.equal(again[n], applied[n]) for n in applied)
