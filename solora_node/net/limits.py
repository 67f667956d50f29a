"""Every limit and default of the wire that crosses a process boundary, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from solora_node.config import NetworkSection, TopologySection

# Codec bounds: a header describes at most this many tensors of at most this
# many dimensions, so a hostile header cannot make us loop or allocate much.
MAX_HEADER_BYTES = 1 << 20
MAX_TENSORS = 4096
MAX_DIMS = 8
MAX_NAME_CHARS = 256
MAX_ITEMS_PER_OFFER = 1024

# Reconnection: a neighbour that comes back is dialled again within ~2 s
# (gRPC's default max back-off is 120 s, far too slow for gossip rounds).
INITIAL_RECONNECT_BACKOFF_MS = 250
MIN_RECONNECT_BACKOFF_MS = 250
MAX_RECONNECT_BACKOFF_MS = 2000
# Keepalive finds a dead TCP connection (peer vanished without FIN) quickly.
KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 5_000
# Server side: accept client pings this often, even with no call in flight.
MIN_PING_INTERVAL_MS = 5_000


@dataclass(frozen=True)
class WireLimits:
    """The limits one node applies to what it sends and receives."""

    chunk_bytes: int = 1 << 20
    max_message_bytes: int = 8 << 20
    max_delta_bytes: int = 256 << 20
    chunk_deadline_s: float = 10.0
    exchange_deadline_s: float = 60.0
    max_streams_per_peer: int = 4
    norm_bound: float = 1e4
    staleness_rounds: int = 3

    def __post_init__(self) -> None:
        # A chunk plus its frame must fit a message, or every transfer would fail.
        if self.chunk_bytes + 1024 > self.max_message_bytes:
            raise ValueError(
                f"chunk_bytes ({self.chunk_bytes}) + 1 KiB framing must fit "
                f"max_message_bytes ({self.max_message_bytes})"
            )

    @classmethod
    def from_config(cls, network: NetworkSection, topology: TopologySection) -> WireLimits:
        return cls(
            chunk_bytes=network.chunk_bytes,
            max_message_bytes=network.max_message_bytes,
            max_delta_bytes=network.max_delta_bytes,
            chunk_deadline_s=network.chunk_deadline_s,
            exchange_deadline_s=network.exchange_deadline_s,
            max_streams_per_peer=network.max_streams_per_peer,
            norm_bound=network.norm_bound,
            staleness_rounds=topology.staleness_rounds,
        )


def channel_options(limits: WireLimits) -> list[tuple[str, int | str]]:
    """Client channel options: bounded messages, keepalive, fast reconnection."""
    return [
        ("grpc.max_send_message_length", limits.max_message_bytes),
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
        ("grpc.min_reconnect_backoff_ms", MIN_RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        # Retries would replay a half-sent stream; the round loop retries instead.
        ("grpc.enable_retries", 0),
    ]


def server_options(limits: WireLimits) -> list[tuple[str, int | str]]:
    """Server options: bounded messages and a keepalive policy matching the clients'."""
    return [
        ("grpc.max_send_message_length", limits.max_message_bytes),
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_pings_without_data", 0),
        # Two nodes must never share a port by accident (SO_REUSEPORT is on by default).
        ("grpc.so_reuseport", 0),
    ]
