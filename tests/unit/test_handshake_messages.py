"""A handshake refusal names both nodes, so the line reads right on either side's log."""

from __future__ import annotations

from solora_node.net.handshake import check_hello
from solora_node.protocol.messages import Hello
from solora_node.protocol.reasons import Reason


def test_federation_mismatch_states_both_sides() -> None:
    ours = Hello(federation_id="fed-a", fingerprint="f" * 64, node_id="a1", task="t")
    theirs = Hello(federation_id="fed-b", fingerprint="f" * 64, node_id="b1", task="t")
    verdict = check_hello(ours, theirs, secure=False, certified_id=None, allow_node_ids=None)
    assert verdict.reason is Reason.OTHER_FEDERATION
    assert verdict.message == (
        "node 'b1' is in federation 'fed-b', node 'a1' is in federation 'fed-a'"
    )


def test_fingerprint_and_version_mismatches_state_both_sides() -> None:
    ours = Hello(federation_id="f", fingerprint="a" * 64, node_id="a1", task="t")
    theirs = Hello(federation_id="f", fingerprint="b" * 64, node_id="b1", task="t")
    verdict = check_hello(ours, theirs, secure=False, certified_id=None, allow_node_ids=None)
    assert verdict.reason is Reason.FINGERPRINT_MISMATCH
    assert "node 'b1' has bbbb" in verdict.message and "node 'a1' has aaaa" in verdict.message
    old = Hello(
        federation_id="f", fingerprint="a" * 64, node_id="b1", task="t", protocol_version=99
    )
    verdict = check_hello(ours, old, secure=False, certified_id=None, allow_node_ids=None)
    assert verdict.reason is Reason.INCOMPATIBLE_VERSION
    assert verdict.message.startswith("node 'b1' speaks protocol 99, node 'a1' speaks")
