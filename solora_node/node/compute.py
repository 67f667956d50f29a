"""Compute utilisation: the share of wall time a node spends in local training steps.

A node that waits for the network, for pacing or for its own checkpoints is not training;
this meter makes that visible as `solora_train_seconds_total` and
`solora_compute_utilization` (docs/operations.md, "Metrics"). The round loop marks when
training starts and ends; the gauge is computed when /metrics is scraped, from another
thread, hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

DEFAULT_WINDOW_S = 60.0


class ComputeMeter:
    """Training spans of one node; `clock` is injectable for tests."""

    def __init__(
        self, window_s: float = DEFAULT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"compute window must be > 0 seconds, got {window_s}")
        self.window_s = window_s
        self._clock = clock
        self._since = clock()
        self._spans: deque[tuple[float, float]] = deque()
        self._running_since: float | None = None
        self._lock = threading.Lock()
        self.total_s = 0.0

    @contextmanager
    def training(self) -> Iterator[None]:
        """Wrap one stretch of local training steps."""
        with self._lock:
            self._running_since = self._clock()
        try:
            yield
        finally:
            self._end()

    def _end(self) -> None:
        with self._lock:
            start, end = self._running_since, self._clock()
            self._running_since = None
            if start is None:
                return
            self.total_s += end - start
            self._spans.append((start, end))
            # Spans that ended before the window are never read again.
            horizon = end - self.window_s
            while self._spans and self._spans[0][1] <= horizon:
                self._spans.popleft()

    @property
    def last_span_s(self) -> float:
        with self._lock:
            return self._spans[-1][1] - self._spans[-1][0] if self._spans else 0.0

    def utilisation(self) -> float:
        """Training time over the last `window_s` seconds (or since start, if shorter),
        a training stretch still running included: 0.0 .. 1.0."""
        with self._lock:
            now = self._clock()
            begin = max(self._since, now - self.window_s)
            spans = list(self._spans)
            if self._running_since is not None:
                spans.append((self._running_since, now))
        if now <= begin:
            return 0.0
        busy = sum(max(0.0, min(end, now) - max(start, begin)) for start, end in spans)
        return min(1.0, busy / (now - begin))
