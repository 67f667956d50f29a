"""Shared by the benchmarks that run real daemons in the network-namespace testbed
(`bench util`, `bench fleet`): a testbed that is always torn down, and per-process
CPU and memory read from /proc.

Teardown is `Testbed.down` (solora_node/testbed/netns.py): processes by pid (checked
against their start time), namespaces by name, the work dir. It runs on success, on any
error, on Ctrl-C and on SIGTERM/SIGHUP (turned into KeyboardInterrupt here).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from solora_node.benchmarks.idle import cpu_seconds
from solora_node.testbed.netns import Testbed, require_root

__all__ = ["counter_sum", "cpu_seconds", "rss_bytes", "running", "sample", "wait_until"]

_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def running(bed: Testbed, *, ready_timeout: float, prometheus: bool = False) -> Iterator[Testbed]:
    """`bed` up for the duration of the block, then down with its work dir, whatever happens."""
    require_root()
    previous = {s: signal.signal(s, _interrupt) for s in _SIGNALS}
    try:
        bed.up(prometheus=prometheus, ready_timeout=ready_timeout)
        yield bed
    except BaseException:
        for host in bed.state.hosts:  # what went wrong, before the logs are removed
            tail = bed.tail(host, lines=5)
            if tail:
                print(f"--- {host.name} ({host.log}):\n{tail}", file=sys.stderr)
        raise
    finally:
        try:
            bed.down(keep_work_dir=False)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def rss_bytes(pid: int) -> tuple[int, int]:
    """(resident now, peak resident) of a process, from /proc/PID/status."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def sample(metrics: Mapping[str, float] | None, name: str) -> float:
    """One unlabelled sample of a scraped node (parse_exposition's keys); NaN if absent."""
    if metrics is None:
        return float("nan")
    return metrics.get(f"{name}{{}}", float("nan"))


def counter_sum(metrics: Mapping[str, float] | None, name: str) -> float:
    """The sum over every label set of a counter (e.g. solora_bytes_sent_total), or over
    those whose labels start as given (e.g. solora_deltas_applied_total{kind=own)."""
    if metrics is None:
        return float("nan")
    prefix = name if "{" in name else f"{name}{{"
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


def wait_until(
    bed: Testbed, done: Any, timeout: float, what: str, poll_s: float = 2.0
) -> dict[str, dict[str, float] | None]:
    """Scrape every node until `done(scraped)` is true; returns that scrape."""
    deadline = time.monotonic() + timeout
    while True:
        scraped = bed.scrape()
        if done(scraped):
            return scraped
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout:.0f} s")
        time.sleep(poll_s)
