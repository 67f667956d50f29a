"""TLS handshake failures from gRPC core's log lines: classified, counted, rate-limited."""

from __future__ import annotations

import logging

import pytest

from solora_node.native_stderr import GRPC_CORE_LOGGER
from solora_node.net.tls_watch import LOG_EVERY_S, TlsWatch, classify

# Lines as gRPC core 1.85 writes them (see native_stderr.parse_line for the prefix).
EXPIRED = (
    "Handshake failed with error SSL_ERROR_SSL: error:1000007d:SSL routines:"
    "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: certificate has expired"
)
UNKNOWN_CA = (
    "Handshake failed with error SSL_ERROR_SSL: error:1000007d:SSL routines:"
    "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate"
)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (EXPIRED, "expired"),
        (UNKNOWN_CA, "unknown_ca"),
        ("No match found for server name: bob (ssl_transport_security.cc:3238)", "name_mismatch"),
        ("Handshake failed with error SSL_ERROR_SSL: HTTP_REQUEST", "other"),
        ("Server listening on 127.0.0.1:7000", None),
    ],
)
def test_classify(line: str, reason: str | None) -> None:
    assert classify(line) == reason


def test_counts_every_failure_and_logs_once_a_minute_per_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    counted: list[str] = []
    watch = TlsWatch(counted.append, clock=lambda: now[0])
    watch.install()
    core = logging.getLogger(GRPC_CORE_LOGGER)
    try:
        with caplog.at_level(logging.WARNING, logger="solora_node.net.tls"):
            for _ in range(5):
                core.info("%s", UNKNOWN_CA)
            core.info("%s", EXPIRED)
            now[0] += LOG_EVERY_S
            core.info("%s", UNKNOWN_CA)
    finally:
        watch.uninstall()
    assert counted == ["unknown_ca"] * 5 + ["expired", "unknown_ca"]
    assert watch.summary() == "expired=1 unknown_ca=6"
    lines = [r.getMessage() for r in caplog.records if r.name == "solora_node.net.tls"]
    assert len(lines) == 3  # unknown_ca, expired, unknown_ca a minute later
    assert "not from our federation CA" in lines[0] and "1 since" in lines[0]
    assert "has expired" in lines[1]
    assert "5 since" in lines[2]  # the 4 unlogged ones and this one
