"""Drives the docker-compose testbed for the tests: engine, image build, up/down, probes.

The Docker engine is started here only when none answers (and only that one is
stopped again); images are built with deploy/images/build.sh (cached between
runs); the federation runs from docker-compose.yml with deploy/compose/tiny.yml
under a fixed project name, so a run that died half-way is cleaned up by the next.
Everything is reached on the project's own internal network from the Docker host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from solora_node.metrics import parse_exposition

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "deploy" / "images" / "build.sh"
ALLOW_MDNS = ROOT / "deploy" / "compose" / "allow-mdns.sh"
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "deploy" / "compose" / "tiny.yml")
PROJECT = "solora-compose-test"
NETWORK = f"{PROJECT}_solora"
NODES = tuple(f"node-{i}" for i in range(1, 7))
PROMETHEUS_ADDRESS = "172.29.57.90"  # docker-compose.yml's default
METRICS_PORT = 9100
ENGINE_START_S = 60.0
BUILD_TIMEOUT_S = 1800.0
COMPOSE_TIMEOUT_S = 300.0

T = TypeVar("T")


class ComposeError(RuntimeError):
    """A docker or docker-compose command failed; the message carries its output."""


def missing_tools() -> str | None:
    """Why the testbed cannot run here, or None."""
    if os.geteuid() != 0:
        return "the Docker engine and debootstrap need root (CI runs as root)"
    for tool, package in (
        ("docker", "docker.io"),
        ("dockerd", "docker.io"),
        ("docker-compose", "docker-compose"),
        ("debootstrap", "debootstrap"),
    ):
        if shutil.which(tool) is None:
            return f"`{tool}` not installed (Debian package {package}; .ci/run installs it)"
    return None


def run(cmd: Sequence[str], timeout: float = 120.0, check: bool = True) -> str:
    """Run a command, return its stdout; raise ComposeError with its output on failure."""
    done = subprocess.run(
        list(cmd), cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise ComposeError(f"{' '.join(cmd)}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return done.stdout


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, every: float = 1.0) -> T:
    """Poll `probe` until it returns something other than None/False; raise on the deadline."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (OSError, ComposeError, ValueError) as exc:
            value, last_error = None, str(exc)
        if value is not None and value is not False:
            return value
        time.sleep(every)
    raise TimeoutError(
        f"not within {timeout:.0f} s: {what}" + (f" ({last_error})" if last_error else "")
    )


class Engine:
    """A Docker engine: the running one, or one started here (and stopped by stop())."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @staticmethod
    def answers() -> bool:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0

    def start(self) -> str | None:
        """Use or start an engine; the reason it cannot be had, or None."""
        if self.answers():
            return None
        fd, log = tempfile.mkstemp(prefix="solora-dockerd-", suffix=".log")
        self.log_path = Path(log)
        with os.fdopen(fd, "wb") as out:
            self.process = subprocess.Popen(
                ["dockerd"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_for(
                lambda: self.process.poll() is None and self.answers(),  # type: ignore[union-attr]
                ENGINE_START_S,
                "dockerd answers `docker info`",
            )
        except TimeoutError:
            tail = self.log_path.read_text(errors="replace")[-600:]
            self.stop()
            return f"no Docker engine could be started here: {tail.strip().splitlines()[-1:]}"
        return None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)


class ComposeTestbed:
    """The 6-node compose federation on the tiny model, under project PROJECT."""

    def __init__(self) -> None:
        self.build_seconds: float | None = None
        self.up_at: float | None = None
        self.added_mdns_rule = False

    # ------------------------------------------------------------------ lifecycle

    def compose(self, *args: str, timeout: float = COMPOSE_TIMEOUT_S, check: bool = True) -> str:
        files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
        return run(["docker-compose", "-p", PROJECT, *files, *args], timeout=timeout, check=check)

    def build(self) -> str:
        """Build (or find cached) both images; the script's summary line (time per step)."""
        started = time.monotonic()
        done = subprocess.run(
            ["nice", "-n", "10", str(BUILD_SCRIPT)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise ComposeError(
                f"{BUILD_SCRIPT.name}: exit {done.returncode}\n{done.stderr[-3000:]}"
            )
        self.build_seconds = time.monotonic() - started
        return done.stderr.strip().splitlines()[-1]

    def up(self) -> None:
        self.down()  # what a run that died half-way left behind
        if not self._mdns_allowed():
            run([str(ALLOW_MDNS), "add"])
            self.added_mdns_rule = True
        self.up_at = time.monotonic()
        self.compose("up", "-d", "--no-build")

    @staticmethod
    def _mdns_allowed() -> bool:
        return subprocess.run([str(ALLOW_MDNS), "check"], capture_output=True).returncode == 0

    def down(self) -> None:
        """Containers, the network and the project's volumes; images stay (the cache).
        The mDNS firewall rule goes too, if this testbed added it."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)
        if self.added_mdns_rule:
            run([str(ALLOW_MDNS), "remove"], check=False)
            self.added_mdns_rule = False

    def leftovers(self) -> list[str]:
        """Containers, networks and volumes of the project that still exist."""
        label = f"label=com.docker.compose.project={PROJECT}"
        found = []
        for kind in ("container", "network", "volume"):
            listed = run(
                ["docker", kind, "ls", "-q", "--filter", label]
                + (["-a"] if kind == "container" else [])
            )
            found += [f"{kind} {name}" for name in listed.split()]
        return found

    # ------------------------------------------------------------------ containers

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).split()
        if not ids:
            raise ComposeError(f"no container for service {service}")
        return ids[0]

    def inspect(self, service: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(run(["docker", "inspect", self.container(service)]))
        return data[0]

    def address(self, service: str) -> str | None:
        networks = self.inspect(service)["NetworkSettings"]["Networks"]
        found = networks.get(NETWORK, {}).get("IPAddress")
        return str(found) if found else None

    def health(self, service: str) -> str:
        return str(self.inspect(service)["State"].get("Health", {}).get("Status", "none"))

    def logs(self, service: str, tail: int = 40) -> str:
        """The last lines a container wrote (stdout and stderr)."""
        done = subprocess.run(
            ["docker", "logs", "--tail", str(tail), self.container(service)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout + done.stderr

    def memory_mib(self) -> dict[str, float]:
        """Resident memory of every running node container (docker stats, one sample)."""
        ids = {self.container(n): n for n in NODES}
        out = run(["docker", "stats", "--no-stream", "--format", "{{.ID}} {{.MemUsage}}", *ids])
        usage: dict[str, float] = {}
        for line in out.splitlines():
            short, used = line.split()[0], line.split()[1]
            name = next(n for cid, n in ids.items() if cid.startswith(short))
            usage[name] = _mib(used)
        return usage

    # ------------------------------------------------------------------ probes

    def scrape(self, service: str) -> dict[str, float] | None:
        """A node's /metrics from the Docker host over the compose network; None if unreachable."""
        try:
            address = self.address(service)
            if address is None:
                return None
            with urllib.request.urlopen(f"http://{address}:{METRICS_PORT}/metrics", timeout=3) as r:
                return parse_exposition(r.read().decode())
        except (OSError, ComposeError, ValueError):
            return None

    def scrape_all(self, services: Sequence[str] = NODES) -> dict[str, dict[str, float] | None]:
        return {s: self.scrape(s) for s in services}

    def prometheus(self, expr: str) -> list[dict[str, Any]]:
        """An instant query against the testbed's Prometheus; the result vector."""
        query = urllib.parse.urlencode({"query": expr})
        url = f"http://{PROMETHEUS_ADDRESS}:9090/api/v1/query?{query}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                data = json.loads(answer.read())
        except urllib.error.HTTPError as err:
            raise ComposeError(f"prometheus query {expr!r}: {err.read().decode()[:300]}") from None
        result: list[dict[str, Any]] = data["data"]["result"]
        return result


def _mib(text: str) -> float:
    """'123.4MiB' / '1.2GiB' / '900KiB' -> MiB."""
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 2**20}
    for unit, factor in units.items():
        if text.endswith(unit) and unit != "B":
            return float(text[: -len(unit)]) * factor
    return float(text.rstrip("B")) * units["B"]
