"""`solora-node certs init-ca|issue`: a federation CA and node certificates for mutual TLS."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from solora_node.commands._common import emit_json
from solora_node.config import NODE_ID_PATTERN
from solora_node.errors import SoloraError
from solora_node.net.security import init_ca, issue_node_cert


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("certs", help="federation CA and node certificates (mutual TLS)")
    actions = parser.add_subparsers(dest="certs_action", metavar="ACTION", required=True)

    init = actions.add_parser("init-ca", help="create the federation CA (ca.pem, ca.key)")
    init.add_argument("--dir", type=Path, required=True, help="directory for ca.pem and ca.key")
    init.add_argument(
        "--federation", default="solora-default", help="federation id (certificate O)"
    )
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.add_argument("--json", action="store_true", help="print one JSON object")
    init.set_defaults(handler=handle_init_ca)

    issue = actions.add_parser("issue", help="issue a node certificate signed by the CA")
    issue.add_argument(
        "node_id", metavar="NODE_ID", help="the node's id (node.id); becomes CN and a DNS SAN"
    )
    issue.add_argument(
        "--dir", type=Path, required=True, help="directory holding ca.pem and ca.key"
    )
    issue.add_argument(
        "--out", type=Path, default=None, help="where to write NODE_ID.pem/.key (default --dir)"
    )
    issue.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="extra subject alternative name (repeatable): the host name or IP peers dial",
    )
    issue.add_argument("--force", action="store_true", help="replace existing files")
    issue.add_argument("--json", action="store_true", help="print one JSON object")
    issue.set_defaults(handler=handle_issue)


def handle_init_ca(args: argparse.Namespace) -> int:
    if not re.match(NODE_ID_PATTERN, args.federation):
        raise SoloraError(f"--federation {args.federation!r} must match {NODE_ID_PATTERN}")
    cert, key = init_ca(args.dir, args.federation, force=args.force)
    result = {"ca_cert": str(cert), "ca_key": str(key), "federation": args.federation}
    if args.json:
        emit_json(result)
    else:
        print(f"CA certificate: {cert}\nCA key (keep secret, mode 0600): {key}")
    return 0


def handle_issue(args: argparse.Namespace) -> int:
    if not re.match(NODE_ID_PATTERN, args.node_id):
        raise SoloraError(f"NODE_ID {args.node_id!r} must match {NODE_ID_PATTERN}")
    cert, key = issue_node_cert(args.dir, args.node_id, args.out, args.san, force=args.force)
    # Absolute paths: the snippet means the same files wherever it is pasted (a config
    # file's relative paths resolve against that file's folder, not this shell's).
    cert, key, ca = (p.expanduser().resolve() for p in (cert, key, args.dir / "ca.pem"))
    result = {"node_id": args.node_id, "cert": str(cert), "key": str(key), "ca_cert": str(ca)}
    if args.json:
        emit_json(result)
    else:
        print(
            f"# node certificate: {cert}\n# node key (mode 0600): {key}\n"
            f"# for the config of node {args.node_id} (node.id must be {args.node_id}):\n"
            "network:\n  tls:\n"
            f"    ca_cert: {ca}\n    cert: {cert}\n    key: {key}"
        )
    return 0
