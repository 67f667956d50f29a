"""Counters and logs of what happened on the wire, behind a small observer interface.

The node maps these callbacks to Prometheus metrics (e.g.
solora_deltas_refused_total{reason}); labels it derives must stay bounded, so
the peer id is passed for logging only.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

from solora_node.protocol.messages import ExchangeResult
from solora_node.protocol.reasons import Reason

log = logging.getLogger("solora_node.net")

ByteKind = Literal["delta", "control"]
Direction = Literal["sent", "received"]


class WireObserver(Protocol):
    def item_refused(self, peer: str, reason: Reason, *, by_me: bool) -> None:
        """An item was refused: by this node (received) or by the peer (sent)."""
        ...

    def handshake_refused(self, peer: str, reason: Reason, *, by_me: bool) -> None: ...

    def bytes_moved(self, kind: ByteKind, direction: Direction, nbytes: int) -> None: ...

    def exchange_finished(self, result: ExchangeResult) -> None: ...


class NullObserver:
    """Counts nothing; the default."""

    def item_refused(self, peer: str, reason: Reason, *, by_me: bool) -> None:
        pass

    def handshake_refused(self, peer: str, reason: Reason, *, by_me: bool) -> None:
        pass

    def bytes_moved(self, kind: ByteKind, direction: Direction, nbytes: int) -> None:
        pass

    def exchange_finished(self, result: ExchangeResult) -> None:
        pass


class RefusalLog:
    """Logs a refusal once per (peer, reason) at WARNING, repeats at DEBUG: a hostile or
    broken peer cannot flood the log, and the first occurrence is always visible."""

    def __init__(self, limit: int = 10_000) -> None:
        self._seen: set[tuple[str, Reason]] = set()
        self._limit = limit

    def refused(self, peer: str, reason: Reason, detail: str, what: str = "item") -> None:
        key = (peer, reason)
        if key in self._seen:
            log.debug("refused %s from %s: %s (%s)", what, peer, reason.value, detail)
            return
        if len(self._seen) < self._limit:  # bounded memory even with many peer ids
            self._seen.add(key)
        log.warning(
            "refused %s from %s: %s (%s); further %s refusals from this peer are logged at DEBUG",
            what,
            peer,
            reason.value,
            detail,
            reason.value,
        )
