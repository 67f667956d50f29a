"""`solora-node topology`: the cluster plan, live from a node or planned from a config.

`--addr HOST:PORT` asks a running node for the plan it uses now (its status reply carries
it; authenticated like `status`). `--config FILE` alone is a dry run: it reads only
`federation` (the task list), `topology` and `membership` from the file and opens no
connection, so node, network (TLS included) and the other sections are neither needed
nor validated.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from solora_node.commands._common import add_config_args, emit_json
from solora_node.config import (
    NODE_ID_PATTERN,
    ConfigError,
    FederationSection,
    TopologySection,
    cli_overrides,
    deep_merge,
    env_overrides,
    read_yaml,
    validation_problems,
)
from solora_node.errors import SoloraError
from solora_node.federation.topology import Member, plan_topology
from solora_node.protocol.topology import TopologyView, view_from_plan

MEMBERSHIP_EXAMPLE = "membership: [{id: n0, task: arithmetic}, {id: n1, task: topic, capacity: 2}]"


class MemberEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=NODE_ID_PATTERN, description="node id")
    task: str = Field(description="the node's task; must be in federation.tasks")
    capacity: float = Field(1.0, gt=0, description="head election prefers higher capacity")


class TopologyFile(BaseModel):
    """The parts of a node config this command reads; other sections are ignored."""

    model_config = ConfigDict(extra="ignore")

    federation: FederationSection = Field(default_factory=FederationSection)
    topology: TopologySection = Field(default_factory=TopologySection)
    membership: list[MemberEntry] | None = None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "topology",
        help="clusters, heads, bridges, weights and spectral gaps: live from a node (--addr) "
        "or planned for the `membership:` list in a config (--config alone)",
    )
    add_config_args(parser, required=False)
    parser.add_argument(
        "--addr",
        metavar="HOST:PORT",
        help="a running node's gRPC address: show the plan it uses now (--config then only "
        "gives the TLS certificate to present, as for `status`)",
    )
    parser.add_argument("--insecure", action="store_true", help="plaintext (insecure nodes)")
    parser.add_argument("--node-id", help="the id the node's certificate must carry")
    parser.add_argument("--timeout", type=float, default=5.0)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument("--png", type=Path, metavar="FILE", help="draw the plan into a PNG")
    parser.set_defaults(handler=handle)


def _problems(err: ValidationError, path: Path) -> list[str]:
    generic = validation_problems(err, str(path))
    problems = []
    for error, line in zip(err.errors(), generic, strict=True):
        loc = error.get("loc", ())
        if error.get("type") == "extra_forbidden" and loc and loc[0] == "membership":
            where = ".".join(str(p) for p in loc)
            line = f"{path}: {where}: unknown field; expected id, task, capacity"
        problems.append(line)
    return problems


def load_membership(path: Path, overrides: list[str]) -> tuple[TopologyFile, list[Member]]:
    """Validate the sections the plan needs; every problem is one line naming the field."""
    data = read_yaml(path)
    # Same precedence as the daemon: file < SOLORA_ environment < --set.
    data = deep_merge(deep_merge(data, env_overrides(os.environ)), cli_overrides(overrides))
    try:
        parsed = TopologyFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_problems(err, path)) from None
    if parsed.membership is None:
        raise ConfigError(
            [f"{path}: membership: missing; list the nodes to plan for, e.g. {MEMBERSHIP_EXAMPLE}"]
        )
    if not parsed.membership:
        raise ConfigError([f"{path}: membership: empty; expected at least one {{id, task}} entry"])
    tasks = parsed.federation.tasks
    problems = []
    seen: dict[str, int] = {}
    for n, entry in enumerate(parsed.membership):
        if entry.task not in tasks:
            problems.append(
                f"{path}: membership.{n}.task = {entry.task!r}: not in federation.tasks {tasks}"
            )
        if entry.id in seen:
            first = seen[entry.id]
            problems.append(
                f"{path}: membership.{n}.id = {entry.id!r}: duplicate of membership.{first}"
            )
        seen.setdefault(entry.id, n)
    if problems:
        raise ConfigError(problems)
    members = [Member(e.id, e.task, e.capacity) for e in parsed.membership]
    return parsed, members


def render_table(plan: dict[str, Any]) -> str:
    """The plan as text, from its JSON form (planned or live: the live one adds liveness)."""
    rows = [("task", "size", "degree", "spectral_gap", "head", "members")]
    for c in plan["clusters"]:
        row = (
            c["task"],
            str(c["size"]),
            str(c["degree"]),
            f"{c['spectral_gap']:.4f}",
            c["head"],
            " ".join(c["members"]),
        )
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(r[i].ljust(widths[i]) for i in range(len(widths))) + "  " + r[-1] for r in rows
    ]
    lines.append("")
    bridges = plan["bridges"]
    lines.append(
        f"bridges ({len(bridges)}): " + (", ".join(f"{a}--{b}" for a, b in bridges) or "none")
    )
    intra = sum(len(c["edges"]) for c in plan["clusters"])
    lines.append(
        f"edges: {len(plan['edges'])} ({intra} inside clusters, {len(bridges)} bridges); "
        f"max_degree {plan['max_degree']}, bridges_per_cluster {plan['bridges_per_cluster']}"
    )
    for c in plan["clusters"]:
        if "edge_weights" in c:
            weights = [
                f"{a}--{b} {w:.3f}" for (a, b), w in zip(c["edges"], c["edge_weights"], strict=True)
            ]
            own = [f"{n} {w:.3f}" for n, w in c["self_weights"].items()]
            lines.append(f"weights {c['task']}: " + ", ".join(weights + own))
    if "members" in plan:
        states = [f"{m['id']} {m['state']}" for m in plan["members"]]
        lines.append("members: " + ", ".join(states))
    return "\n".join(lines)


def _live_view(args: argparse.Namespace) -> TopologyView:
    from solora_node.commands.status import fetch_status

    logging.getLogger("solora_node.net.client").setLevel(logging.ERROR)  # no INSECURE banner
    status = asyncio.run(fetch_status(args))
    if status.topology is None:
        raise SoloraError(
            f"topology --addr {args.addr}: node {status.node_id} has no plan yet (it plans "
            "at its first round, after loading its model); try again shortly"
        )
    view: TopologyView = status.topology
    return view


def handle(args: argparse.Namespace) -> int:
    if args.addr is not None:
        view = _live_view(args)
        result, title = view.to_json(), f"live topology from {args.addr}"
    elif args.config is not None:
        parsed, members = load_membership(args.config, args.overrides)
        plan = plan_topology(
            members,
            parsed.federation.tasks,
            max_degree=parsed.topology.max_degree,
            bridges_per_cluster=parsed.topology.bridges_per_cluster,
        )
        result, title = plan.to_json(), f"planned topology of {args.config}"
        view = view_from_plan(plan, {m.node_id: (m.task, "planned") for m in members}, 0.0)
    else:
        raise SoloraError(
            "topology: give --addr HOST:PORT (a running node) or --config FILE (a dry run "
            "of its membership: list)"
        )
    if args.json:
        emit_json(result)
    elif args.png is not None:
        from solora_node.topology_draw import topology_png

        topology_png(view, args.png, title)
        print(f"wrote {args.png}")
    else:
        print(render_table(result))
    return 0
