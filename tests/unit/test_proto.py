"""The committed generated code matches protos/, and Python mirrors of proto enums agree."""

from __future__ import annotations

import filecmp
from pathlib import Path

from solora_node._proto import common_pb2
from solora_node.net import protogen
from solora_node.net.convert import (
    hello_from_proto,
    hello_to_proto,
    status_from_proto,
    status_to_proto,
)
from solora_node.protocol.blocks import BlockVersion
from solora_node.protocol.messages import (
    ExchangeResult,
    HeldBlock,
    Hello,
    NeighbourStatus,
    NodeStatus,
    PeerAddress,
)
from solora_node.protocol.reasons import Reason


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    fresh = tmp_path / "_proto"
    protogen.generate(fresh)
    committed = protogen.OUTPUT_DIR
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file()), (
        "solora_node/_proto differs from protos/: run `make proto` and commit the result"
    )
    stale = [n for n in names if not filecmp.cmp(fresh / n, committed / n, shallow=False)]
    assert not stale, f"stale generated files {stale}: run `make proto` and commit the result"


def test_generated_imports_are_package_relative() -> None:
    for path in protogen.OUTPUT_DIR.glob("*.py"):
        assert "from solora.v1" not in path.read_text(), path


def test_reason_enum_mirrors_proto() -> None:
    proto_names = {v.name for v in common_pb2.Reason.DESCRIPTOR.values} - {"REASON_UNSPECIFIED"}
    assert proto_names == set(Reason.__members__)
    for reason in Reason:
        assert Reason.from_proto(reason.to_proto()) is reason
        assert reason.value == reason.name.lower()
    # The zero value and unknown numbers (a newer peer) never read as OK.
    assert Reason.from_proto(0) is Reason.PROTOCOL_ERROR
    assert Reason.from_proto(9999) is Reason.PROTOCOL_ERROR


def test_hello_round_trip() -> None:
    hello = Hello(
        federation_id="fed",
        fingerprint="abc",
        node_id="n1",
        task="arithmetic",
        address="10.0.0.1:7070",
        round=12,
        held=(HeldBlock(BlockVersion("topic", 11, "n2"), "m1"),),
        peers=(PeerAddress("n2", "10.0.0.2:7070", "topic"),),
    )
    assert hello_from_proto(hello_to_proto(hello)) == hello


def test_status_round_trip() -> None:
    status = NodeStatus(
        node_id="n1",
        task="arithmetic",
        round=3,
        federation_id="fed",
        cluster="arithmetic",
        neighbours=(NeighbourStatus(PeerAddress("n2", "h:1", "topic"), "alive", "bridge", 2),),
        last_exchanges=(
            ExchangeResult(
                peer="n2",
                round=3,
                reason=Reason.OK,
                items_sent=1,
                items_received=2,
                refused_by_peer={Reason.STALE_ROUND: 1},
                refused_by_me={Reason.NOT_FINITE: 2},
                bytes_sent=10,
                bytes_received=20,
                finished_unix=1.5,
                duration_s=0.25,
            ),
        ),
        details={"metrics": "127.0.0.1:9100"},
    )
    back = status_from_proto(status_to_proto(status))
    assert back == status
    assert back.last_exchanges[0].items_refused == 3
