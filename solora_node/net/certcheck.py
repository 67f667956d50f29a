"""Start-time checks of a node's TLS files, each failure one line naming the config field.

gRPC accepts an expired certificate, a foreign CA or a key of another certificate at
start and then fails every handshake (or ends in "Failed to bind"), so the node would
train alone forever. These checks run before anything binds: PEM format, validity
window, key matches certificate, certificate signed by the configured CA.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from solora_node.errors import SoloraError

log = logging.getLogger("solora_node.net.security")

EXPIRY_WARNING = dt.timedelta(days=30)


class CertificateProblem(SoloraError):
    """A TLS file configured for this node cannot work (exit 2 at start)."""


@dataclass(frozen=True)
class CertificateFacts:
    """What the running node reports about its own certificate."""

    not_after: dt.datetime

    @property
    def expiry_timestamp(self) -> float:
        return self.not_after.timestamp()


def _certificate(pem: bytes, field: str, path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise CertificateProblem(
            f"{field}: {path} is not a PEM certificate (expected '-----BEGIN CERTIFICATE-----')"
        ) from None


def _check_window(cert: x509.Certificate, field: str, path: Path, now: dt.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateProblem(
            f"{field}: {path} is not valid yet (from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} "
            "UTC; check this machine's clock)"
        )
    if now > cert.not_valid_after_utc:
        raise CertificateProblem(
            f"{field}: {path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
            "(issue a new one with `solora-node certs issue`)"
        )


def _public_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_tls_files(
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    paths: dict[str, Path],
    now: dt.datetime | None = None,
) -> CertificateFacts:
    """Raise CertificateProblem for the first file that cannot work; else the facts.

    `paths` maps the config fields network.tls.ca_cert/cert/key to their files."""
    now = now or dt.datetime.now(dt.timezone.utc)
    ca_field, cert_field, key_field = (f"network.tls.{k}" for k in ("ca_cert", "cert", "key"))
    ca = _certificate(ca_pem, ca_field, paths[ca_field])
    cert = _certificate(cert_pem, cert_field, paths[cert_field])
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CertificateProblem(
            f"{key_field}: {paths[key_field]} is not an unencrypted PEM private key"
        ) from None
    _check_window(ca, ca_field, paths[ca_field], now)
    _check_window(cert, cert_field, paths[cert_field], now)
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise CertificateProblem(
            f"{key_field}: {paths[key_field]} is not the key of {paths[cert_field]} "
            f"({cert_field}); configure the key issued with that certificate"
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateProblem(
            f"{cert_field}: {paths[cert_field]} is not signed by the CA in {ca_field} "
            f"({paths[ca_field]}); every peer would refuse it"
        ) from None
    facts = CertificateFacts(not_after=cert.not_valid_after_utc)
    left = facts.not_after - now
    if left < EXPIRY_WARNING:
        log.warning(
            "%s: %s expires in %d days (%s UTC); issue a new one before then",
            cert_field,
            paths[cert_field],
            left.days,
            f"{facts.not_after:%Y-%m-%d %H:%M}",
        )
    return facts
