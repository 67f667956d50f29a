"""MembershipView: merging sources and the liveness state machine, on a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from solora_node.net.membership import MembershipEvent, MembershipView, PeerInfo, PeerState

LIVE, SUSPECT, DEAD = PeerState.LIVE, PeerState.SUSPECT, PeerState.DEAD


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _peer(node_id: str, source: str = "mdns", **changes: object) -> PeerInfo:
    base = PeerInfo(
        node_id=node_id,
        federation="fed",
        task="arithmetic",
        host="127.0.0.1",
        grpc_port=7000 + len(node_id),
        metrics_port=0,
        protocol=1,
        fingerprint="fp",
        source=source,  # type: ignore[arg-type]
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def view(clock: FakeClock) -> MembershipView:
    return MembershipView(
        _peer("self", "self"), liveness_deadline_s=6.0, max_failures=3, clock=clock
    )


def _recorder(view: MembershipView) -> list[MembershipEvent]:
    events: list[MembershipEvent] = []
    view.add_listener(events.append)
    return events


def test_direct_report_is_live_and_stamped(view: MembershipView, clock: FakeClock) -> None:
    events = _recorder(view)
    assert view.report(_peer("b"))
    assert view.state("b") is LIVE
    peer = view.peer("b")
    assert peer is not None and peer.last_seen == clock.now
    assert [(e.kind, e.peer.node_id, e.state) for e in events] == [("added", "b", LIVE)]


def test_ignores_self_and_incompatible_peers(view: MembershipView) -> None:
    assert not view.report(_peer("self"))
    assert not view.report(_peer("x", federation="other"))
    assert not view.report(_peer("y", fingerprint="other"))
    assert not view.report(_peer("z", protocol=2))
    assert not view.report(_peer("x", federation="other"))  # counted once per node
    assert view.peers() == {}
    assert view.ignored_counts() == {"federation": 1, "fingerprint": 1, "protocol": 1}
    assert view.ignored("federation") == frozenset({"x"})


def test_deadlines_live_suspect_dead_forgotten(view: MembershipView, clock: FakeClock) -> None:
    view.report(_peer("b"))
    events = _recorder(view)
    assert view.next_deadline() == clock.now + 6.0
    clock.advance(6.0)
    assert view.refresh() == []  # the deadline itself is still in time
    clock.advance(0.1)
    view.refresh()
    assert view.state("b") is SUSPECT
    clock.advance(6.0)  # 12.1 s > dead_after_s (2 x deadline)
    view.refresh()
    assert view.state("b") is DEAD
    clock.advance(60.0 - 12.1 + 0.1)  # past forget_after_s (10 x deadline)
    view.refresh()
    assert view.state("b") is None
    assert [(e.kind, e.state) for e in events] == [
        ("state", SUSPECT),
        ("state", DEAD),
        ("removed", DEAD),
    ]


def test_mark_alive_resets_and_revives(view: MembershipView, clock: FakeClock) -> None:
    view.report(_peer("b"))
    clock.advance(5.0)
    assert view.mark_alive("b")
    clock.advance(5.0)  # 10 s since discovery, 5 s since the last proof of life
    view.refresh()
    assert view.state("b") is LIVE
    clock.advance(20.0)
    view.refresh()
    assert view.state("b") is DEAD
    view.mark_alive("b")
    assert view.state("b") is LIVE
    assert not view.mark_alive("unknown") and not view.mark_failed("unknown")


def test_failures_suspect_then_dead(view: MembershipView) -> None:
    view.report(_peer("b"))
    view.mark_failed("b")
    assert view.state("b") is SUSPECT
    view.mark_failed("b")
    assert view.state("b") is SUSPECT
    view.mark_failed("b")
    assert view.state("b") is DEAD
    view.mark_alive("b")
    view.mark_failed("b")  # the failure count restarted at the proof of life
    assert view.state("b") is SUSPECT


def test_live_members_sorted_with_self(view: MembershipView) -> None:
    for node_id in ("d", "a", "c"):
        view.report(_peer(node_id))
    view.mark_failed("c")
    assert [p.node_id for p in view.live_members()] == ["a", "d", "self"]
    with_suspect = view.live_members(include_suspect=True)
    assert [p.node_id for p in with_suspect] == ["a", "c", "d", "self"]
    assert with_suspect[-1].source == "self"
    assert view.counts() == {"live": 2, "suspect": 1, "dead": 0}


def test_exchange_peer_needs_confirmation(view: MembershipView, clock: FakeClock) -> None:
    view.report(_peer("e", "exchange"))
    assert view.state("e") is SUSPECT
    assert [p.node_id for p in view.live_members()] == ["self"]
    view.mark_alive("e")
    assert view.state("e") is LIVE
    # An unconfirmed hearsay peer dies after dead_after_s.
    view.report(_peer("f", "exchange"))
    clock.advance(12.5)
    view.refresh()
    assert view.state("f") is DEAD


def test_hearsay_never_overrides_direct_info(view: MembershipView) -> None:
    view.report(_peer("b", grpc_port=7001))
    events = _recorder(view)
    view.report(_peer("b", "exchange", grpc_port=9999))
    peer = view.peer("b")
    assert peer is not None and peer.grpc_port == 7001 and peer.source == "mdns"
    view.report(_peer("b", "bootstrap", grpc_port=7002))
    peer = view.peer("b")
    assert peer is not None and peer.grpc_port == 7002 and peer.source == "bootstrap"
    assert [(e.kind, e.peer.grpc_port) for e in events] == [("updated", 7002)]


def test_hearsay_does_not_revive_a_dead_peer(view: MembershipView, clock: FakeClock) -> None:
    view.report(_peer("b"))
    clock.advance(13.0)
    view.refresh()
    assert view.state("b") is DEAD
    view.report(_peer("b", "exchange"))
    assert view.state("b") is DEAD


def test_goodbye_removes_and_blocks_stale_hearsay(view: MembershipView, clock: FakeClock) -> None:
    view.report(_peer("b"))
    events = _recorder(view)
    view.goodbye("b")
    assert view.peer("b") is None
    assert [e.kind for e in events] == ["removed"]
    assert not view.report(_peer("b", "exchange"))  # stale report from a third node
    assert view.report(_peer("b"))  # but the node itself coming back is believed
    assert view.state("b") is LIVE
    view.goodbye("b")
    clock.advance(13.0)
    view.refresh()
    assert view.report(_peer("b", "exchange"))  # tombstone expired


def test_bootstrap_addresses_until_identified(clock: FakeClock) -> None:
    view = MembershipView(
        _peer("self", "self"),
        liveness_deadline_s=6.0,
        bootstrap=["10.0.0.2:7070", "[::1]:7071"],
        clock=clock,
    )
    assert view.undialed_bootstrap() == [("10.0.0.2", 7070), ("::1", 7071)]
    view.report(_peer("b", "bootstrap", host="10.0.0.2", grpc_port=7070))
    assert view.undialed_bootstrap() == [("::1", 7071)]
    view.mark_failed("b")
    view.mark_failed("b")
    view.mark_failed("b")
    assert view.undialed_bootstrap() == [("10.0.0.2", 7070), ("::1", 7071)]


def test_listener_errors_do_not_break_tracking(view: MembershipView) -> None:
    def broken(event: MembershipEvent) -> None:
        raise RuntimeError("boom")

    events = _recorder(view)
    view.add_listener(broken)
    unsubscribe = view.add_listener(events.append)
    unsubscribe()
    view.report(_peer("b"))
    assert len(events) == 1 and view.state("b") is LIVE


def test_bound_view_fires_deadline_timer_without_polling() -> None:
    async def scenario() -> None:
        view = MembershipView(_peer("self", "self"), liveness_deadline_s=0.05)
        changed = asyncio.Event()
        view.add_listener(lambda e: changed.set() if e.kind == "state" else None)
        view.bind(asyncio.get_running_loop())
        view.report(_peer("b"))
        await asyncio.wait_for(changed.wait(), 2.0)
        assert view.state("b") is SUSPECT
        view.unbind()

    asyncio.run(scenario())


def test_rejects_inconsistent_deadlines() -> None:
    with pytest.raises(ValueError):
        MembershipView(_peer("self", "self"), liveness_deadline_s=6.0, dead_after_s=1.0)


def test_peer_off_the_allow_list_never_enters_membership(clock: FakeClock) -> None:
    view = MembershipView(
        _peer("self", "self"), liveness_deadline_s=6.0, clock=clock, allow=["a1", "self"]
    )
    for source in ("mdns", "bootstrap", "exchange"):
        assert not view.report(_peer("intruder", source))
    assert view.report(_peer("a1"))
    assert set(view.peers()) == {"a1"}
    assert [p.node_id for p in view.live_members()] == ["a1", "self"]
    assert view.ignored("not_allowed") == {"intruder"}


def test_refused_certificate_keeps_a_peer_out_until_forgotten(
    view: MembershipView, clock: FakeClock
) -> None:
    events: list[MembershipEvent] = []
    view.add_listener(events.append)
    assert view.report(_peer("rogue"))
    view.refuse("rogue", "unknown_ca")
    assert view.peer("rogue") is None and events[-1].kind == "removed"
    for source in ("mdns", "bootstrap", "exchange"):
        assert not view.report(_peer("rogue", source))  # no flapping back in
    assert view.ignored("unknown_ca") == {"rogue"}
    clock.advance(view.forget_after_s + 1)
    assert view.report(_peer("rogue"))  # a fixed certificate gets another chance
