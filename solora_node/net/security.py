"""Federation CA, node certificates and the mutual-TLS credentials built from them.

Trust model: the federation CA signs every member's certificate; a node's id is
the certificate's CN and also a DNS SAN. Servers require a client certificate
from that CA and read the caller's id from the CN; clients pin the server's id
by setting grpc.ssl_target_name_override to the node id they expect, so TLS
hostname verification checks the SAN against the id instead of the IP dialled.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from solora_node.config import NetworkSection
from solora_node.errors import SoloraError
from solora_node.net.certcheck import check_tls_files

log = logging.getLogger("solora_node.net.security")

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CA_VALIDITY = dt.timedelta(days=3650)
NODE_VALIDITY = dt.timedelta(days=825)


class CertError(SoloraError):
    """A certificate or key file is missing, unreadable, or would be overwritten."""


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes a node needs for mutual TLS."""

    ca_cert: bytes
    cert: bytes
    key: bytes
    node_id: str
    expiry_timestamp: float = 0.0  # of `cert`, unix time (0: not checked)

    def server_credentials(self) -> grpc.ServerCredentials:
        # require_client_auth: only holders of a federation certificate may call at all.
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca_cert, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_cert, private_key=self.key, certificate_chain=self.cert
        )


# ---------------------------------------------------------------- files


def _write_private(path: Path, data: bytes) -> None:
    """Create with mode 0600 from the start, so the key is never briefly world-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise CertError(f"{path}: cannot read {what} ({exc.strerror})") from None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def init_ca(directory: Path, federation_id: str, *, force: bool = False) -> tuple[Path, Path]:
    """Write ca.pem and ca.key (0600) into directory; refuses to overwrite unless force."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    if not force and (cert_path.exists() or key_path.exists()):
        raise CertError(
            f"{directory}: a CA already exists (use --force to replace it and every node cert)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation_id),
            x509.NameAttribute(NameOID.COMMON_NAME, f"solora federation {federation_id} CA"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _san_entries(node_id: str, extra: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.DNSName(node_id),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    for entry in extra:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            names.append(x509.DNSName(entry))
    unique: list[x509.GeneralName] = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return unique


def tls_section(ca_dir: Path, node_id: str) -> dict[str, str]:
    """The `network.tls` config of a node whose certificate `issue_node_cert` wrote to ca_dir."""
    return {
        "ca_cert": str(ca_dir / CA_CERT_FILE),
        "cert": str(ca_dir / f"{node_id}.pem"),
        "key": str(ca_dir / f"{node_id}.key"),
    }


def issue_node_cert(
    ca_dir: Path,
    node_id: str,
    out_dir: Path | None = None,
    sans: list[str] | None = None,
    *,
    force: bool = False,
) -> tuple[Path, Path]:
    """Write <node_id>.pem and <node_id>.key (0600), signed by the CA in ca_dir."""
    ca_cert = x509.load_pem_x509_certificate(_read(ca_dir / CA_CERT_FILE, "CA certificate"))
    try:
        ca_key = serialization.load_pem_private_key(
            _read(ca_dir / CA_KEY_FILE, "CA key"), password=None
        )
    except (ValueError, TypeError) as exc:
        raise CertError(f"{ca_dir / CA_KEY_FILE}: not an unencrypted PEM key ({exc})") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{ca_dir / CA_KEY_FILE}: expected an EC key")
    out = out_dir or ca_dir
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{node_id}.pem", out / f"{node_id}.key"
    if not force and (cert_path.exists() or key_path.exists()):
        raise CertError(f"{cert_path}: already exists (use --force to replace it)")
    federation = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, node_id)]
    if federation:
        subject.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, str(federation[0].value)))
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + NODE_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(_san_entries(node_id, sans or [])), critical=False
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


# ---------------------------------------------------------------- loading


def cert_node_id(cert_pem: bytes) -> str:
    """The node id a certificate binds: its CN."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise CertError(f"not a PEM certificate ({exc})") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise CertError("certificate has no CN (node id)")
    return str(names[0].value)


def load_tls(network: NetworkSection, node_id: str) -> TlsMaterial | None:
    """TLS material from the config, or None (with a loud warning) when insecure: true.

    A certificate issued for another node id is a config error: the node would
    be refused by every peer with IDENTITY_MISMATCH anyway.
    """
    if network.insecure:
        log.warning(
            "INSECURE: network.insecure is true; gRPC runs in PLAINTEXT without authentication. "
            "Any host that can reach port %s can read and inject deltas. "
            "Use only on a trusted test network.",
            network.port,
        )
        return None
    tls = network.tls
    if tls.ca_cert is None or tls.cert is None or tls.key is None:
        raise CertError(
            "TLS is on: set network.tls.ca_cert, cert and key, or network.insecure: true"
        )
    material = TlsMaterial(
        ca_cert=_read(tls.ca_cert, "network.tls.ca_cert"),
        cert=_read(tls.cert, "network.tls.cert"),
        key=_read(tls.key, "network.tls.key"),
        node_id=node_id,
    )
    paths = {"network.tls.ca_cert": tls.ca_cert, "network.tls.cert": tls.cert}
    facts = check_tls_files(
        material.ca_cert, material.cert, material.key, {**paths, "network.tls.key": tls.key}
    )
    material = dataclasses.replace(material, expiry_timestamp=facts.expiry_timestamp)
    cert_id = cert_node_id(material.cert)
    if cert_id != node_id:
        raise CertError(
            f"{tls.cert}: certificate is for node {cert_id!r}, but node.id is {node_id!r}"
        )
    return material


def load_tls_dir(directory: Path, node_id: str) -> TlsMaterial:
    """Material laid out by `solora-node certs` (ca.pem, <node_id>.pem, <node_id>.key)."""
    return TlsMaterial(
        ca_cert=_read(directory / CA_CERT_FILE, "CA certificate"),
        cert=_read(directory / f"{node_id}.pem", "node certificate"),
        key=_read(directory / f"{node_id}.key", "node key"),
        node_id=node_id,
    )


def peer_certified_id(context: grpc.aio.ServicerContext) -> str | None:
    """The caller's node id from its verified client certificate; None on plaintext."""
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    if not names:
        return None
    name = names[0]
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
