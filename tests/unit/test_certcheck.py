"""TLS files are checked at start: each unusable one is a one-line error naming the
config field and the file (exit 2), before anything binds or trains."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from solora_node.config import NetworkSection
from solora_node.net.certcheck import CertificateProblem
from solora_node.net.security import init_ca, issue_node_cert, load_tls

NOW = dt.datetime.now(dt.timezone.utc)


def reissue(ca_dir: Path, node_id: str, not_before: dt.datetime, not_after: dt.datetime) -> Path:
    """A certificate for node_id with the given validity window, signed by ca_dir's CA,
    for the key issue_node_cert wrote (so only the dates differ)."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    key = serialization.load_pem_private_key((ca_dir / f"{node_id}.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(ca_key, hashes.SHA256())
    )
    path = ca_dir / f"{node_id}-dated.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    init_ca(tmp_path / "ca", "fed")
    for node_id in ("a", "b"):
        issue_node_cert(tmp_path / "ca", node_id)
    init_ca(tmp_path / "other", "fed")
    issue_node_cert(tmp_path / "other", "a")
    return tmp_path


def _network(ca: Path, cert: Path, key: Path) -> NetworkSection:
    return NetworkSection.model_validate({"tls": {"ca_cert": ca, "cert": cert, "key": key}})


def _problem(net: NetworkSection) -> str:
    with pytest.raises(CertificateProblem) as caught:
        load_tls(net, "a")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_valid_files_pass_and_report_the_expiry(pki: Path) -> None:
    ca = pki / "ca"
    material = load_tls(_network(ca / "ca.pem", ca / "a.pem", ca / "a.key"), "a")
    assert material is not None
    expiry = dt.datetime.fromtimestamp(material.expiry_timestamp, dt.timezone.utc)
    assert dt.timedelta(days=800) < expiry - NOW < dt.timedelta(days=830)


def test_expired_certificate(pki: Path) -> None:
    ca = pki / "ca"
    cert = reissue(ca, "a", NOW - dt.timedelta(days=60), NOW - dt.timedelta(days=1))
    message = _problem(_network(ca / "ca.pem", cert, ca / "a.key"))
    assert message.startswith(f"network.tls.cert: {cert} expired on ")


def test_not_yet_valid_certificate(pki: Path) -> None:
    ca = pki / "ca"
    cert = reissue(ca, "a", NOW + dt.timedelta(days=2), NOW + dt.timedelta(days=60))
    message = _problem(_network(ca / "ca.pem", cert, ca / "a.key"))
    assert message.startswith(f"network.tls.cert: {cert} is not valid yet")


def test_key_of_another_certificate(pki: Path) -> None:
    ca = pki / "ca"
    message = _problem(_network(ca / "ca.pem", ca / "a.pem", ca / "b.key"))
    assert message.startswith(f"network.tls.key: {ca / 'b.key'} is not the key of {ca / 'a.pem'}")


def test_certificate_of_another_ca(pki: Path) -> None:
    ca, other = pki / "ca", pki / "other"
    message = _problem(_network(ca / "ca.pem", other / "a.pem", other / "a.key"))
    assert message.startswith(f"network.tls.cert: {other / 'a.pem'} is not signed by the CA")
    assert str(ca / "ca.pem") in message


@pytest.mark.parametrize("field", ["ca_cert", "cert", "key"])
def test_file_that_is_not_pem(pki: Path, field: str) -> None:
    ca = pki / "ca"
    junk = pki / "junk.txt"
    junk.write_text("this is not PEM\n")
    files = {"ca_cert": ca / "ca.pem", "cert": ca / "a.pem", "key": ca / "a.key", field: junk}
    message = _problem(_network(files["ca_cert"], files["cert"], files["key"]))
    assert message.startswith(f"network.tls.{field}: {junk} is not")
    assert "PEM" in message


def test_expiring_soon_is_a_warning(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca = pki / "ca"
    cert = reissue(ca, "a", NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=10))
    assert load_tls(_network(ca / "ca.pem", cert, ca / "a.key"), "a") is not None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("expires in 9 days" in w or "expires in 10 days" in w for w in warnings)


def test_run_with_an_expired_certificate_exits_2_with_one_line(pki: Path) -> None:
    ca = pki / "ca"
    cert = reissue(ca, "a", NOW - dt.timedelta(days=60), NOW - dt.timedelta(days=1))
    config = pki / "a.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "node": {"id": "a", "data_dir": str(pki / "data")},
                "federation": {"id": "fed", "tasks": ["arithmetic"]},
                "task": {"name": "arithmetic"},
                "model": {"base": "tiny"},
                "network": {
                    "listen_host": "127.0.0.1",
                    "port": 0,
                    "tls": {
                        "ca_cert": str(ca / "ca.pem"),
                        "cert": str(cert),
                        "key": str(ca / "a.key"),
                    },
                },
                "discovery": {"mdns": False},
                "metrics": {"enabled": False},
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "solora_node", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert lines[-1].startswith(f"solora-node run: error: network.tls.cert: {cert} expired on ")
