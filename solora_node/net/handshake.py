"""Decide whether a peer's hello is acceptable; the same rules on both ends of a call."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from solora_node.protocol.messages import Hello
from solora_node.protocol.reasons import Reason


@dataclass(frozen=True)
class Verdict:
    reason: Reason
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK


def check_hello(
    local: Hello,
    remote: Hello,
    *,
    secure: bool,
    certified_id: str | None,
    allow_node_ids: Collection[str] | None = None,
) -> Verdict:
    """Identity first (who may talk at all), then compatibility (whether talking is useful).

    `certified_id` is the node id the transport proved (certificate CN on the
    server side; the pinned TLS target name on the client side); None on plaintext.
    """
    if secure and certified_id is None:
        return Verdict(Reason.NOT_AUTHORISED, "no verified certificate identity")
    if certified_id is not None and remote.node_id != certified_id:
        return Verdict(
            Reason.IDENTITY_MISMATCH,
            f"claims node id {remote.node_id!r} but its certificate is for {certified_id!r}",
        )
    if allow_node_ids is not None and remote.node_id not in allow_node_ids:
        return Verdict(Reason.NOT_AUTHORISED, f"node {remote.node_id!r} is not on the allow-list")
    if remote.node_id == local.node_id:
        # Another process runs under this node's id (a copy, or a second start).
        return Verdict(Reason.IDENTITY_IN_USE, f"node id {remote.node_id!r} is live here already")
    # Messages name both nodes: the refusing side logs them, and so does the refused side
    # (from the reply), where "this node" would name the wrong one.
    them, us = f"node {remote.node_id!r}", f"node {local.node_id!r}"
    if remote.protocol_version != local.protocol_version:
        return Verdict(
            Reason.INCOMPATIBLE_VERSION,
            f"{them} speaks protocol {remote.protocol_version}, "
            f"{us} speaks {local.protocol_version}",
        )
    if remote.federation_id != local.federation_id:
        return Verdict(
            Reason.OTHER_FEDERATION,
            f"{them} is in federation {remote.federation_id!r}, "
            f"{us} is in federation {local.federation_id!r}",
        )
    if remote.fingerprint != local.fingerprint:
        return Verdict(
            Reason.FINGERPRINT_MISMATCH,
            f"projection fingerprints differ: {them} has {remote.fingerprint[:12]}, "
            f"{us} has {local.fingerprint[:12]} (federation seed, tasks, rank or model differ)",
        )
    return Verdict(Reason.OK)
