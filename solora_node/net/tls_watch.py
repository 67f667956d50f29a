"""Failed TLS handshakes, in the node's own log: why, how often, counted by reason.

A TLS refusal happens inside gRPC core, below every handler of ours, on both sides of
the connection; the only trace is gRPC core's own log line ("Handshake failed with
error ... certificate has expired"). solora_node/native_stderr.py turns those lines
into records of the logger "grpc.core"; TlsWatch reads them, says why in one line per
reason at most once a minute (with the count since), counts them in
solora_tls_handshake_failures_total{reason} and keeps a summary for `status`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from solora_node.native_stderr import GRPC_CORE_LOGGER
from solora_node.protocol.reasons import Reason

log = logging.getLogger("solora_node.net.tls")

LOG_EVERY_S = 60.0
# Exchange failures that mean "this peer's certificate will not do": retrying every
# round would only make it flap live/suspect, so membership leaves it out for a while.
CERTIFICATE_REFUSALS = frozenset({Reason.UNKNOWN_CA, Reason.CERT_EXPIRED, Reason.IDENTITY_MISMATCH})
# Substrings of gRPC core / BoringSSL messages, most specific first.
_CLASSES = (
    ("certificate has expired", "expired"),
    ("certificate is not yet valid", "not_yet_valid"),
    ("No match found for server name", "name_mismatch"),
    ("Hostname Verification", "name_mismatch"),
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "no_certificate"),
    ("unable to get local issuer certificate", "unknown_ca"),
    ("self signed certificate", "unknown_ca"),
    ("self-signed certificate", "unknown_ca"),
    ("CERTIFICATE_VERIFY_FAILED", "unknown_ca"),
)
_EXPLAINED = {
    "expired": "a certificate has expired (ours or the peer's)",
    "not_yet_valid": "a certificate is not valid yet (check the clocks)",
    "name_mismatch": "the peer's certificate does not name the node id dialled",
    "no_certificate": "the peer sent no client certificate",
    "unknown_ca": "the peer's certificate is not from our federation CA (or ours not from its)",
    "other": "TLS handshake failed",
}


def classify(message: str) -> str | None:
    """The reason of a gRPC core TLS failure line; None for lines about anything else."""
    for needle, reason in _CLASSES:
        if needle in message:
            return reason
    if "Handshake failed" in message:
        return "other"
    return None


class TlsWatch(logging.Handler):
    """A handler on the grpc.core logger; `on_failure(reason)` counts each failure."""

    def __init__(
        self, on_failure: Callable[[str], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(level=logging.DEBUG)
        self.on_failure = on_failure
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self._unlogged: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}
        self.last_detail: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        reason = classify(message)
        if reason is None:
            return
        self.counts[reason] += 1
        self._unlogged[reason] += 1
        self.last_detail[reason] = message[:300]
        self.on_failure(reason)
        now = self.clock()
        if now - self._logged_at.get(reason, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged_at[reason] = now
            count, self._unlogged[reason] = self._unlogged[reason], 0
            log.warning(
                "TLS handshake failed: %s (%s; %d since the last such line): %s",
                _EXPLAINED[reason],
                reason,
                count,
                message[:300],
            )

    def summary(self) -> str:
        """For `status`: 'expired=3 unknown_ca=1', or '' when none failed."""
        return " ".join(f"{reason}={n}" for reason, n in sorted(self.counts.items()))

    def install(self) -> None:
        core = logging.getLogger(GRPC_CORE_LOGGER)
        core.addHandler(self)
        # gRPC core's handshake lines are at info level; the records must reach us even
        # when the root logger is at warning.
        if core.level == logging.NOTSET or core.level > logging.INFO:
            core.setLevel(logging.INFO)

    def uninstall(self) -> None:
        logging.getLogger(GRPC_CORE_LOGGER).removeHandler(self)
