"""Why something was refused: one vocabulary for handshakes, items and transport failures.

`Reason` mirrors the proto enum solora.v1.Reason (a test keeps them equal); its
string values are the lowercase proto names, ready to be metric label values.
"""

from __future__ import annotations

from enum import Enum
from typing import cast

from solora_node._proto import common_pb2
from solora_node.errors import SoloraError


class Reason(str, Enum):
    OK = "ok"
    INCOMPATIBLE_VERSION = "incompatible_version"
    OTHER_FEDERATION = "other_federation"
    FINGERPRINT_MISMATCH = "fingerprint_mismatch"
    NOT_AUTHORISED = "not_authorised"
    IDENTITY_MISMATCH = "identity_mismatch"
    BUSY = "busy"
    UNKNOWN_TASK = "unknown_task"
    SHUTTING_DOWN = "shutting_down"
    PROTOCOL_ERROR = "protocol_error"
    IDENTITY_IN_USE = "identity_in_use"
    WRONG_SHAPE = "wrong_shape"
    WRONG_DTYPE = "wrong_dtype"
    MASK_MISMATCH = "mask_mismatch"
    MASK_UNKNOWN = "mask_unknown"
    NOT_FINITE = "not_finite"
    NORM_TOO_LARGE = "norm_too_large"
    TOO_LARGE = "too_large"
    STALE_ROUND = "stale_round"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    BAD_CHUNK = "bad_chunk"
    TIMEOUT = "timeout"
    REFUSED_BY_STORE = "refused_by_store"
    UNAVAILABLE = "unavailable"
    UNKNOWN_CA = "unknown_ca"
    CERT_EXPIRED = "cert_expired"

    def to_proto(self) -> common_pb2.Reason:
        return cast(common_pb2.Reason, common_pb2.Reason.Value(self.name))

    @classmethod
    def from_proto(cls, value: int) -> Reason:
        """Unknown numbers (a newer peer) and the zero value read as PROTOCOL_ERROR, never OK."""
        try:
            name = common_pb2.Reason.Name(value)
        except ValueError:
            return cls.PROTOCOL_ERROR
        return cls.__members__.get(name, cls.PROTOCOL_ERROR)


class WireError(SoloraError):
    """Bytes or frames from a peer that cannot be accepted; `reason` says why in one word."""

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")
