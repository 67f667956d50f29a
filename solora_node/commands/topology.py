"""`solora-node topology --config FILE [--json]`: planned clusters, degrees, spectral gaps.

Reads only `federation` (the task list), `topology` and `membership` from the
file: the command opens no connection, so node, network (TLS included) and
the other sections are neither needed nor validated here.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

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
from solora_node.federation.topology import Member, TopologyPlan, plan_topology

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
        help="planned clusters, degrees, spectral gaps for the `membership:` list in a config",
    )
    add_config_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
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


def render_table(plan: TopologyPlan) -> str:
    rows = [("task", "size", "degree", "spectral_gap", "head", "members")]
    for c in plan.clusters:
        row = (
            c.task,
            str(c.size),
            str(c.degree),
            f"{c.spectral_gap:.4f}",
            c.head,
            " ".join(c.members),
        )
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(r[i].ljust(widths[i]) for i in range(len(widths))) + "  " + r[-1] for r in rows
    ]
    lines.append("")
    bridges = ", ".join(f"{a}--{b}" for a, b in plan.bridges) or "none"
    lines.append(f"bridges ({len(plan.bridges)}): {bridges}")
    intra = sum(len(c.graph.edges) for c in plan.clusters)
    lines.append(
        f"edges: {len(plan.edges)} ({intra} inside clusters, {len(plan.bridges)} bridges); "
        f"max_degree {plan.max_degree}, bridges_per_cluster {plan.bridges_per_cluster}"
    )
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    parsed, members = load_membership(args.config, args.overrides)
    plan = plan_topology(
        members,
        parsed.federation.tasks,
        max_degree=parsed.topology.max_degree,
        bridges_per_cluster=parsed.topology.bridges_per_cluster,
    )
    if args.json:
        emit_json(plan.to_json())
    else:
        print(render_table(plan))
    return 0
