"""Mutual TLS with a federation CA: members talk, others are refused, ids bound to certs."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from cryptography import x509

from solora_node._proto import handshake_pb2, service_pb2_grpc
from solora_node.cli import main as cli_main
from solora_node.config import ConfigError, NetworkSection, load_config
from solora_node.net.client import HandshakeOutcome, PeerClient
from solora_node.net.security import (
    CertError,
    TlsMaterial,
    cert_node_id,
    init_ca,
    issue_node_cert,
    load_tls,
    load_tls_dir,
)
from solora_node.net.server import PeerServer
from solora_node.protocol.reasons import Reason
from solora_node.testing.memory_store import InMemoryStore
from solora_node.testing.workload import random_mask, synthetic_delta
from tests.support.observers import CountingObserver

T = TypeVar("T")
LAYOUT = {"l0": (16, 8)}


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tls")
    ca, rogue = root / "ca", root / "rogue"
    init_ca(ca, "fed")
    init_ca(rogue, "fed")  # same federation name, different key: not trusted
    for node in ("hub", "a", "b", "outsider"):
        issue_node_cert(ca, node)
    issue_node_cert(rogue, "a")
    return {"ca": ca, "rogue": rogue}


def store(node_id: str) -> InMemoryStore:
    s = InMemoryStore(node_id=node_id, task="t", layouts={"t": LAYOUT})
    mask = random_mask("t", LAYOUT, 0.5, seed=1)
    s.add_mask(mask)
    if node_id != "hub":
        s.add_block(synthetic_delta(mask, round_=0, origin=node_id, seed=3))
    return s


def handshake_with_hub(
    pki: dict[str, Path],
    client_tls: TlsMaterial | None,
    client_id: str,
    *,
    expected: str | None = "hub",
    allow: list[str] | None = None,
) -> tuple[HandshakeOutcome, CountingObserver, InMemoryStore]:
    hub = store("hub")
    seen = CountingObserver()

    async def scenario() -> HandshakeOutcome:
        server = PeerServer(
            hub, tls=load_tls_dir(pki["ca"], "hub"), allow_node_ids=allow, observer=seen
        )
        await server.start()
        client = PeerClient(store(client_id), tls=client_tls) if client_tls else None
        try:
            if client is None:
                ca_cert = (pki["ca"] / "ca.pem").read_bytes()
                return await _handshake_without_cert(server.address, ca_cert, client_id)
            return await client.handshake(server.address, expected, timeout=5)
        finally:
            if client is not None:
                await client.close()
            await server.stop(0)

    return run(scenario()), seen, hub


async def _handshake_without_cert(address: str, ca_cert: bytes, node_id: str) -> HandshakeOutcome:
    """A client that trusts the CA but presents no certificate of its own."""
    creds = grpc.ssl_channel_credentials(root_certificates=ca_cert)
    options = [("grpc.ssl_target_name_override", "hub")]
    channel = grpc.aio.secure_channel(address, creds, options=options)
    try:
        stub = service_pb2_grpc.SoloraStub(channel)  # type: ignore[no-untyped-call]
        await stub.Handshake(handshake_pb2.Hello(node_id=node_id), timeout=5)
    except grpc.aio.AioRpcError as err:
        return HandshakeOutcome(Reason.UNAVAILABLE, err.details() or "")
    finally:
        await channel.close()
    return HandshakeOutcome(Reason.OK)


def test_mtls_pair_talks_and_exchanges(pki: dict[str, Path]) -> None:
    hub = store("hub")

    async def scenario() -> Any:
        server = PeerServer(hub, tls=load_tls_dir(pki["ca"], "hub"))
        await server.start()
        client = PeerClient(store("a"), tls=load_tls_dir(pki["ca"], "a"))
        try:
            return await client.exchange(server.address, "hub")
        finally:
            await client.close()
            await server.stop(0)

    result = run(scenario())
    assert result.ok and result.items_sent == 1
    assert [b.version.origin for b in hub.received] == ["a"]
    assert hub.peers["a"].node_id == "a"


def test_client_without_certificate_is_refused(pki: dict[str, Path]) -> None:
    outcome, _, hub = handshake_with_hub(pki, None, "a")
    assert outcome.reason is Reason.UNAVAILABLE  # TLS handshake fails: no RPC ever runs
    assert hub.peers == {}


def test_certificate_from_another_ca_is_refused(pki: dict[str, Path]) -> None:
    outcome, _, hub = handshake_with_hub(pki, load_tls_dir(pki["rogue"], "a"), "a")
    assert outcome.reason is Reason.UNKNOWN_CA  # CERTIFICATE_VERIFY_FAILED, said as such
    assert hub.peers == {}


def test_server_certificate_must_name_the_expected_node(pki: dict[str, Path]) -> None:
    outcome, _, _ = handshake_with_hub(pki, load_tls_dir(pki["ca"], "a"), "a", expected="b")
    assert outcome.reason is Reason.IDENTITY_MISMATCH  # hostname verification against the id


def test_node_not_on_allow_list_is_refused(pki: dict[str, Path]) -> None:
    tls = load_tls_dir(pki["ca"], "outsider")
    outcome, seen, hub = handshake_with_hub(pki, tls, "outsider", allow=["a", "b"])
    assert outcome.reason is Reason.NOT_AUTHORISED
    assert seen.handshakes_refused == {Reason.NOT_AUTHORISED: 1}
    assert hub.peers == {}
    ok, _, _ = handshake_with_hub(pki, load_tls_dir(pki["ca"], "a"), "a", allow=["a", "b"])
    assert ok.ok


def test_claiming_another_node_id_than_the_certificate_is_refused(pki: dict[str, Path]) -> None:
    # Holds a's certificate, says it is b.
    tls = load_tls_dir(pki["ca"], "a")
    outcome, seen, hub = handshake_with_hub(pki, tls, "b")
    assert outcome.reason is Reason.IDENTITY_MISMATCH
    assert seen.handshakes_refused == {Reason.IDENTITY_MISMATCH: 1}
    assert hub.peers == {}


def test_plaintext_client_cannot_reach_a_tls_server(pki: dict[str, Path]) -> None:
    hub = store("hub")

    async def scenario() -> Reason:
        server = PeerServer(hub, tls=load_tls_dir(pki["ca"], "hub"))
        await server.start()
        client = PeerClient(store("a"), tls=None)
        try:
            return (await client.handshake(server.address, "hub", timeout=3)).reason
        finally:
            await client.close()
            await server.stop(0)

    assert run(scenario()) is Reason.UNAVAILABLE


def test_insecure_false_without_files_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"network\.tls\.ca_cert"):
        load_config(environ={})
    with pytest.raises(CertError):
        load_tls(NetworkSection(insecure=False), "a")


def test_load_tls_checks_files_and_identity(pki: dict[str, Path], tmp_path: Path) -> None:
    ca = pki["ca"]
    net = NetworkSection.model_validate(
        {"tls": {"ca_cert": ca / "ca.pem", "cert": ca / "a.pem", "key": ca / "a.key"}}
    )
    assert load_tls(net, "a") is not None
    with pytest.raises(CertError, match="certificate is for node 'a'"):
        load_tls(net, "b")
    missing = net.model_copy(
        update={"tls": net.tls.model_copy(update={"key": tmp_path / "nope.key"})}
    )
    with pytest.raises(CertError, match="not found"):
        load_tls(missing, "a")


def test_insecure_mode_warns_loudly(caplog: pytest.LogCaptureFixture) -> None:
    assert load_tls(NetworkSection(insecure=True), "a") is None
    assert any(r.levelname == "WARNING" and "INSECURE" in r.message for r in caplog.records)


def test_certs_cli_writes_ca_and_node_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["certs", "init-ca", "--dir", str(tmp_path), "--federation", "fed-x"]) == 0
    assert (
        cli_main(
            [
                "certs",
                "issue",
                "node-7",
                "--dir",
                str(tmp_path),
                "--san",
                "10.1.2.3",
                "--san",
                "box.lan",
            ]
        )
        == 0
    )
    for key in ("ca.key", "node-7.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600
    cert = (tmp_path / "node-7.pem").read_bytes()
    assert cert_node_id(cert) == "node-7"
    san = x509.load_pem_x509_certificate(cert).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert set(san.value.get_values_for_type(x509.DNSName)) == {"node-7", "box.lan"}
    assert {str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "10.1.2.3",
    }
    # Never silently replace a CA.
    assert cli_main(["certs", "init-ca", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
