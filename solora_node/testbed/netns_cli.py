"""The command line of the namespace testbed: `python -m solora_node.testbed.netns
up|down|status|link|impair ...` (root required). The testbed itself is netns.py."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from solora_node.config import deep_merge
from solora_node.errors import SoloraError
from solora_node.testbed.netns import (
    Testbed,
    require_root,
    teardown_namespaces,
)
from solora_node.testbed.netns_plan import (
    DEFAULT_SUBNET,
    STATE_FILE,
    default_work_dir,
)


def print_status(status: Mapping[str, Any]) -> None:
    print(
        f"testbed {status['name']}  bridge {status['bridge_namespace']} "
        f"({status['bridge_address']})  work dir {status['work_dir']}"
    )
    header = (
        "host",
        "address",
        "task",
        "pid",
        "link",
        "impair",
        "round",
        "live",
        "cluster",
        "blocks",
        "bytes",
    )
    rows = [header]
    for h in status["hosts"]:
        impair = (
            ",".join(x for x in (h["rate"] or "", f"{h['loss']}%" if h["loss"] else "") if x) or "-"
        )

        def num(v: float | None) -> str:
            return "-" if v is None else f"{v:g}"

        rows.append(
            (
                h["host"],
                h["address"],
                h["task"],
                str(h["pid"]) + ("" if h["running"] else " (gone)") if h["pid"] else "-",
                "up" if h["link_up"] else "DOWN",
                impair,
                num(h["round"]),
                num(h["live_peers"]),
                num(h["cluster_size"]),
                num(h["blocks_held"]),
                num(h["bytes_sent"]),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    prom = status["prometheus"]
    if prom is not None:
        state = "running" if prom["running"] else "gone"
        print(
            f"prometheus {prom['url']} (pid {prom['pid']}, {state}; reach it from inside "
            f"the namespace: ip netns exec {status['bridge_namespace']} curl ...)"
        )


def _work_dir(args: argparse.Namespace) -> Path:
    return Path(args.work_dir) if args.work_dir else default_work_dir(args.name)


def _cmd_up(args: argparse.Namespace) -> int:
    base: dict[str, Any] = {}
    if args.config:
        base = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
    if args.rounds:
        base = deep_merge(base, {"rounds": {"max_rounds": args.rounds}})
    if args.tasks:
        base = deep_merge(base, {"federation": {"tasks": args.tasks.split(",")}})
    bed = Testbed.plan(
        args.name,
        args.hosts,
        work_dir=_work_dir(args),
        base=base,
        subnet=args.subnet,
        tls=not args.insecure,
    )
    bed.up(prometheus=not args.no_prometheus)
    if args.rate or args.loss:
        for host in args.impair or []:
            bed.impair(host, rate=args.rate, loss=args.loss)
    print_status(bed.status())
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    work = _work_dir(args)
    if (work / STATE_FILE).exists():
        removed = Testbed.load(work).down(keep_work_dir=args.keep_work_dir)
    else:
        removed = teardown_namespaces(args.name)
        if not args.keep_work_dir and work.exists():
            shutil.rmtree(work)
            removed.append(f"work dir {work}")
    print("\n".join(removed) if removed else f"nothing of testbed {args.name!r} was left")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    status = Testbed.load(_work_dir(args)).status()
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        print_status(status)
    return 0


def _cmd_link(args: argparse.Namespace) -> int:
    Testbed.load(_work_dir(args)).set_link(args.host, args.state == "up")
    return 0


def _cmd_impair(args: argparse.Namespace) -> int:
    bed = Testbed.load(_work_dir(args))
    if args.clear:
        bed.impair(args.host)
    else:
        bed.impair(args.host, rate=args.rate, loss=args.loss)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m solora_node.testbed.netns",
        description="A multi-host solora-node testbed in network namespaces (root required).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default="demo", help="testbed name, [a-z0-9]{1,12}")
        p.add_argument("--work-dir", help="configs, logs, state (default /tmp/solora-netns-NAME)")

    up = sub.add_parser("up", help="create namespaces, start nodes and prometheus")
    common(up)
    up.add_argument("--hosts", type=int, default=4, help="number of hosts (one node each)")
    up.add_argument("--subnet", default=DEFAULT_SUBNET, help="private subnet of the bridge")
    up.add_argument("--tasks", help="comma-separated federation tasks (default from config)")
    up.add_argument("--config", help="YAML merged into every node's config")
    up.add_argument("--rounds", type=int, help="rounds.max_rounds of every node")
    up.add_argument("--insecure", action="store_true", help="plaintext gRPC (no certificates)")
    up.add_argument("--no-prometheus", action="store_true", help="do not start prometheus")
    up.add_argument("--impair", action="append", metavar="HOST", help="impair HOST at start")
    up.add_argument("--rate", help="with --impair: rate limit, e.g. 2mbit")
    up.add_argument("--loss", type=int, default=0, help="with --impair: loss percent")
    up.set_defaults(func=_cmd_up)

    down = sub.add_parser("down", help="stop everything and delete the namespaces (idempotent)")
    common(down)
    down.add_argument("--keep-work-dir", action="store_true", help="keep configs and logs")
    down.set_defaults(func=_cmd_down)

    status = sub.add_parser("status", help="hosts, links, impairments and node metrics")
    common(status)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_cmd_status)

    link = sub.add_parser("link", help="take a host's link down or bring it back")
    common(link)
    link.add_argument("state", choices=["down", "up"])
    link.add_argument("host")
    link.set_defaults(func=_cmd_link)

    impair = sub.add_parser("impair", help="rate limit and/or loss on a host's link")
    common(impair)
    impair.add_argument("host")
    impair.add_argument("--rate", help="e.g. 2mbit (tc tbf, both directions)")
    impair.add_argument("--loss", type=int, default=0, help="percent dropped each way (nftables)")
    impair.add_argument("--clear", action="store_true", help="remove every impairment")
    impair.set_defaults(func=_cmd_impair)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        require_root()
        code: int = args.func(args)
        return code
    except SoloraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
