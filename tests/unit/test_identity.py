"""Incarnations: version order across a node's lives, a second live holder of an id
refused, goodbyes of another life ignored, own-expert recovery wanting only old lives."""

from __future__ import annotations

import dataclasses

from solora_node.federation.recovery import OwnExpertRecovery
from solora_node.federation.versions import newer as newer_version
from solora_node.net.membership import MembershipView, PeerState
from solora_node.node.identity import identity_verdict
from solora_node.protocol.blocks import BlockDelta, BlockVersion
from solora_node.protocol.messages import Hello
from solora_node.protocol.reasons import Reason
from tests.unit.test_membership import FakeClock, _peer

OLD, NEW = 1_700_000_000_000_000, 1_700_000_100_000_000


def v(origin: str, round_: int, incarnation: int = 0) -> BlockVersion:
    return BlockVersion(task="arithmetic", round=round_, origin=origin, incarnation=incarnation)


def test_a_new_life_of_one_origin_is_newer_whatever_its_round() -> None:
    assert newer_version(v("a1", 1, NEW), v("a1", 300, OLD))
    assert not newer_version(v("a1", 300, OLD), v("a1", 1, NEW))
    assert newer_version(v("a1", 5, NEW), v("a1", 4, NEW))  # same life: by round
    # Different origins: rounds decide (a wiped node must not override its cluster).
    assert not newer_version(v("a1", 1, NEW), v("a2", 300, OLD))
    # Peers without incarnations (0): the round order, as before.
    assert not newer_version(v("a1", 1, 0), v("a1", 300, OLD))
    assert newer_version(v("a1", 1), None)


def _view(clock: FakeClock) -> MembershipView:
    return MembershipView(_peer("self", "self", incarnation=NEW), 6.0, clock=clock)


def _hello(node_id: str, incarnation: int) -> Hello:
    return Hello(federation_id="fed", fingerprint="fp", node_id=node_id, task="arithmetic",
                 incarnation=incarnation)  # fmt: skip


def test_second_live_holder_of_an_id_is_refused() -> None:
    clock = FakeClock()
    view = _view(clock)
    assert view.report(_peer("a1", incarnation=OLD))
    # A copy of a1 (another process) while a1 is live: refused, and kept out of the view.
    verdict = identity_verdict(view, _hello("a1", NEW))
    assert verdict is not None and verdict.reason is Reason.IDENTITY_IN_USE
    assert not view.report(_peer("a1", incarnation=NEW, grpc_port=9999))
    assert view.peer("a1") is not None and view.peer("a1").grpc_port != 9999  # type: ignore[union-attr]
    assert view.ignored("identity_in_use") == {"a1"}
    # The live life itself and peers without incarnations pass.
    assert identity_verdict(view, _hello("a1", OLD)) is None
    assert identity_verdict(view, _hello("a1", 0)) is None
    # Once the old life missed its deadline (a kill -9 and restart), the new one is in.
    view.mark_failed("a1")
    assert view.state("a1") is PeerState.SUSPECT
    assert identity_verdict(view, _hello("a1", NEW)) is None
    assert view.report(_peer("a1", incarnation=NEW))


def test_goodbye_of_another_incarnation_never_removes_the_live_one() -> None:
    view = _view(FakeClock())
    assert view.report(_peer("a1", incarnation=NEW))
    view.goodbye("a1", OLD)  # the copy (or an old life) leaves
    assert view.state("a1") is PeerState.LIVE
    view.goodbye("a1", NEW)
    assert view.peer("a1") is None


def _delta(version: BlockVersion) -> BlockDelta:
    return BlockDelta(version=version, mask_id="m", encoding="float16", layers={}, codes={})


def test_recovery_wants_only_copies_of_earlier_lives_while_active() -> None:
    recovery = OwnExpertRecovery("a1", NEW)
    assert not recovery.wants(v("a1", 40, OLD))  # not active: a running node takes none
    recovery.active = True
    assert not recovery.wants(v("a2", 40, OLD))  # someone else's block
    assert not recovery.wants(v("a1", 3, NEW))  # our own current output
    recovery.offer(_delta(v("a1", 40, OLD)))
    recovery.offer(_delta(v("a1", 12, OLD)))  # an older copy does not replace it
    assert not recovery.wants(v("a1", 39, OLD))
    best = recovery.finish()
    assert best is not None and best.version == v("a1", 40, OLD)
    assert not recovery.active


def test_peer_info_carries_the_incarnation_in_the_txt_record() -> None:
    from solora_node.net.discovery import Advertisement, peer_from_txt

    advert = Advertisement("a1", "fed", "arithmetic", 7000, 0, 1, "fp", ("127.0.0.1",), NEW)
    txt = {k.encode(): val.encode() for k, val in advert.txt().items()}
    assert peer_from_txt(txt, "127.0.0.1").incarnation == NEW
    del txt[b"inc"]  # an older node
    assert peer_from_txt(txt, "127.0.0.1").incarnation == 0
    assert dataclasses.replace(advert.as_peer()).incarnation == NEW
