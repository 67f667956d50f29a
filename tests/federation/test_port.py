"""The BlockStore port over a ledger: what a transport (gRPC or in-memory) is told."""

from __future__ import annotations

from solora_node.federation.ledger import Ledger
from solora_node.federation.port import LedgerPort
from solora_node.protocol.messages import Expectation, Hello, PeerAddress, PeerContext
from solora_node.protocol.reasons import Reason
from solora_node.testing.workload import random_mask
from tests.federation.blocks import TASKS, delta, descriptor


def port() -> LedgerPort:
    ledger = Ledger("n2", "a", TASKS, 3)
    record = random_mask("a", {"l0": (4, 2)}, 0.5, seed=1)
    ledger.train_under(record)
    ledger.publish(delta("a", 3, "n2", record.mask_id), record)
    return LedgerPort(
        ledger,
        federation_id="fed",
        fingerprint="fp",
        block_shapes={"l0": (4, 2)},
        code_shapes={"l0": (8,)},
        address="127.0.0.1:1",
        known_peers=lambda: [PeerAddress("n9", "127.0.0.1:9", "b")],
    )


def test_hello_announces_identity_round_held_blocks_and_peers() -> None:
    hello = port().hello()
    assert (hello.node_id, hello.task, hello.round, hello.fingerprint) == ("n2", "a", 3, "fp")
    assert [h.version.origin for h in hello.held] == ["n2"]
    assert [p.node_id for p in hello.peers] == ["n9"]


def test_expectation_and_shapes() -> None:
    p = port()
    mask_id = p.ledger.mask_id
    assert mask_id is not None
    expectation = p.expectation("a", mask_id)
    assert isinstance(expectation, Expectation)
    assert expectation.layers == {"l0": (4,)} and expectation.codes == {"l0": (8,)}
    assert p.expectation("zzz", mask_id) is Reason.UNKNOWN_TASK
    assert p.expectation("a", "never-seen") is Reason.MASK_UNKNOWN
    assert p.expectation("b", mask_id) is Reason.MASK_UNKNOWN  # a mask of another task
    assert p.mask_shapes("b") == {"l0": (4, 2)} and p.mask_shapes("zzz") is None


def test_offer_wants_and_accept_go_through_the_ledger() -> None:
    p = port()
    peer = PeerContext(Hello("fed", "fp", "n3", "b"), certified_id=None)
    assert [d.version.origin for d in p.offer(peer)] == ["n2"]
    incoming = delta("b", 4, "n3")
    assert list(p.wants(peer, [descriptor(0, incoming)])) == [0]
    assert p.accept_delta(incoming, peer) is Reason.OK
    status = p.status()
    assert status.round == 3 and status.details["blocks_held"] == "2"
    assert status.details["mask_id"] == p.ledger.mask_id
