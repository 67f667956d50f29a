"""Namespaces, veth links, impairments and processes for the netns testbed.

Thin wrappers over iproute2 (`ip`, `tc`) and nftables (`nft`). Every call names the
namespace it acts in, so nothing here touches the root namespace's interfaces, routes or
firewall. netem is absent from the target kernel: rates come from `tc tbf`, loss from
nftables `numgen random` drops.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from solora_node.errors import SoloraError

IMPAIR_TABLE = "snt_impair"
RATE_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$")
_RATE_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}
_MTU_FRAME = 1514


class NetnsError(SoloraError):
    """An iproute2/nftables command failed; the message names the command and its stderr."""


def run(cmd: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    """Run a command, return stdout; on failure raise with the command line and stderr."""
    try:
        done = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        # A missing tool is named, not a traceback; optional calls (check=False:
        # cleanup, counters) treat it as "nothing there".
        if not check:
            return ""
        raise NetnsError(f"`{cmd[0]}` is not installed (needed for `{' '.join(cmd)}`)") from None
    if check and done.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def in_ns(namespace: str, *argv: str) -> list[str]:
    """argv run inside `namespace`; `ip netns exec` execs in place, so the pid is argv's."""
    return ["ip", "netns", "exec", namespace, *argv]


# ---------------------------------------------------------------------- namespaces


def list_namespaces() -> list[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).strip()
    # iproute2 prints nothing (not "[]") when there are no namespaces.
    return [entry["name"] for entry in json.loads(out)] if out else []


def add_namespace(namespace: str) -> None:
    run(["ip", "netns", "add", namespace])
    run(["ip", "-n", namespace, "link", "set", "lo", "up"])


def delete_namespace(namespace: str) -> None:
    """Idempotent; the kernel removes the namespace's links, qdiscs and nft tables with it."""
    if namespace in list_namespaces():
        run(["ip", "netns", "del", namespace])


def namespace_pids(namespace: str) -> list[int]:
    out = run(["ip", "netns", "pids", namespace], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


# ---------------------------------------------------------------------- links


def add_bridge(namespace: str, bridge: str, address_cidr: str) -> None:
    # Snooping off: without an IGMP querier the bridge could stop flooding mDNS groups.
    run(["ip", "-n", namespace, "link", "add", bridge, "type", "bridge", "mcast_snooping", "0"])
    run(["ip", "-n", namespace, "addr", "add", address_cidr, "dev", bridge])
    run(["ip", "-n", namespace, "link", "set", bridge, "up"])


def add_host_link(
    bridge_ns: str, bridge: str, port: str, host_ns: str, host_if: str, address_cidr: str
) -> None:
    """A veth pair created inside the bridge namespace (never in the root namespace), one end
    moved straight into the host namespace."""
    run(
        [
            "ip",
            "-n",
            bridge_ns,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            host_if,
            "netns",
            host_ns,
        ]
    )
    run(["ip", "-n", bridge_ns, "link", "set", port, "master", bridge, "up"])
    run(["ip", "-n", host_ns, "addr", "add", address_cidr, "dev", host_if])
    run(["ip", "-n", host_ns, "link", "set", host_if, "up"])


def set_link(namespace: str, ifname: str, up: bool) -> None:
    run(["ip", "-n", namespace, "link", "set", ifname, "up" if up else "down"])


# ---------------------------------------------------------------------- impairments


def rate_bits(rate: str) -> int:
    match = RATE_PATTERN.match(rate.lower())
    if match is None:
        raise NetnsError(f"rate {rate!r}: expected a number and bit|kbit|mbit|gbit, e.g. 2mbit")
    return int(float(match.group(1)) * _RATE_UNITS[match.group(2)])


def set_rate(namespace: str, ifname: str, rate: str | None) -> None:
    """Token bucket on the egress of ifname; None removes it."""
    if rate is None:
        run(["tc", "-n", namespace, "qdisc", "del", "dev", ifname, "root"], check=False)
        return
    # ~10 ms of tokens but at least a few full frames: a bucket smaller than one frame
    # would stall the link, a large one would let bursts through at line rate.
    burst = max(rate_bits(rate) // 8 // 100, 4 * _MTU_FRAME)
    run(
        [
            "tc",
            "-n",
            namespace,
            "qdisc",
            "replace",
            "dev",
            ifname,
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            str(burst),
            "latency",
            "300ms",
        ]
    )


def _loss_ruleset(ifname: str, percent: int, *, netdev: bool) -> str:
    # The counter lets tests and operators see that packets really were dropped.
    drop = f"numgen random mod 100 < {percent} counter drop"
    if netdev:
        # ingress/egress at the device look like loss on the wire: the sending socket sees
        # no error, unlike a drop in the output hook (EPERM to UDP senders).
        return (
            f"table netdev {IMPAIR_TABLE} {{\n"
            f'  chain ingress {{ type filter hook ingress device "{ifname}" priority 0; '
            f"{drop}; }}\n"
            f'  chain egress {{ type filter hook egress device "{ifname}" priority 0; '
            f"{drop}; }}\n"
            "}\n"
        )
    return (
        f"table inet {IMPAIR_TABLE} {{\n"
        f'  chain input {{ type filter hook input priority 0; iifname "{ifname}" {drop}; }}\n'
        f'  chain output {{ type filter hook output priority 0; oifname "{ifname}" {drop}; }}\n'
        "}\n"
    )


def dropped_packets(namespace: str) -> int:
    """Packets the loss table in namespace has dropped so far (0 when there is none)."""
    out = run(in_ns(namespace, "nft", "-j", "list", "ruleset"), check=False)
    total = 0
    for item in json.loads(out or "{}").get("nftables", []):
        rule = item.get("rule")
        if rule is None or rule.get("table") != IMPAIR_TABLE:
            continue
        for expr in rule.get("expr", []):
            if "counter" in expr:
                total += int(expr["counter"]["packets"])
    return total


def clear_loss(namespace: str) -> None:
    for family in ("netdev", "inet"):
        run(in_ns(namespace, "nft", "delete", "table", family, IMPAIR_TABLE), check=False)


def set_loss(namespace: str, ifname: str, percent: int) -> None:
    """Drop `percent` % of packets each way on ifname (an nftables table inside namespace)."""
    if not 0 <= percent <= 100:
        raise NetnsError(f"loss {percent}: expected a percentage 0..100")
    clear_loss(namespace)
    if percent == 0:
        return
    try:
        run(in_ns(namespace, "nft", "-f", "-"), stdin=_loss_ruleset(ifname, percent, netdev=True))
    except NetnsError:
        # Kernels before 5.16 have no egress hook; input/output hooks are the next best.
        run(in_ns(namespace, "nft", "-f", "-"), stdin=_loss_ruleset(ifname, percent, netdev=False))


# ---------------------------------------------------------------------- HTTP inside a namespace

_FETCH = """
import json, sys, urllib.request
out = []
for url in sys.argv[2:]:
    try:
        with urllib.request.urlopen(url, timeout=float(sys.argv[1])) as r:
            out.append({"status": r.status, "body": r.read().decode("utf-8", "replace")})
    except Exception as exc:
        out.append({"status": 0, "body": f"{type(exc).__name__}: {exc}"})
sys.stdout.write(json.dumps(out))
"""


def http_get_many(
    namespace: str, urls: Sequence[str], timeout: float = 5.0
) -> list[dict[str, object]]:
    """GET each url from inside `namespace` (one short-lived stdlib-only Python process);
    each answer is {status, body}, status 0 with the error as body when it failed."""
    if not urls:
        return []
    cmd = in_ns(namespace, sys.executable, "-I", "-c", _FETCH, str(timeout), *urls)
    done = subprocess.run(
        cmd, capture_output=True, text=True, check=False, timeout=timeout * len(urls) + 30
    )
    if done.returncode != 0:
        raise NetnsError(f"HTTP fetch in {namespace} failed: {done.stderr.strip()[-500:]}")
    answers: list[dict[str, object]] = json.loads(done.stdout)
    return answers


# ---------------------------------------------------------------------- processes


def process_start_time(pid: int) -> int | None:
    """Kernel start time (clock ticks since boot) of a live, non-zombie pid, else None.

    Recorded next to each pid so that `down` never signals a recycled pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    # Not our child when an earlier `up` started it: then init reaps it.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_processes(processes: Sequence[tuple[int, int | None]], timeout: float = 15.0) -> list[int]:
    """SIGTERM all at once, wait up to timeout, SIGKILL stragglers; only pids whose start
    time still matches (never a recycled pid). Returns the pids that were ours and are gone."""
    ours = [(pid, st) for pid, st in processes if st is not None and process_start_time(pid) == st]
    for pid, _ in processes:
        _reap(pid)
    for pid, _ in ours:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def alive() -> list[tuple[int, int | None]]:
        for pid, _ in ours:
            _reap(pid)
        return [(pid, st) for pid, st in ours if process_start_time(pid) == st]

    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, _ in alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid, _ in ours]


def stop_process(pid: int, start_time: int | None, timeout: float = 15.0) -> bool:
    """stop_processes for one pid; True when it was ours and is gone."""
    return bool(stop_processes([(pid, start_time)], timeout))
