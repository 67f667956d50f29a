"""The dialling side: handshakes, exchanges and status queries to peers, over cached channels.

One channel per (address, expected node id), reused across rounds; gRPC
reconnects it with a short back-off (net.limits), so a neighbour that comes
back is used again within seconds. Calls never wait for a dead peer: they fail
fast and the round loop moves on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from solora_node._proto import exchange_pb2, handshake_pb2, service_pb2_grpc, status_pb2
from solora_node.net.convert import hello_from_proto, hello_to_proto, status_from_proto
from solora_node.net.frames import ChunkFrame, OutFrame, exchange_call
from solora_node.net.handshake import Verdict, check_hello
from solora_node.net.limits import WireLimits, channel_options
from solora_node.net.observe import NullObserver, RefusalLog, WireObserver
from solora_node.net.port import BlockStore
from solora_node.net.security import TlsMaterial
from solora_node.net.server import SERVICE_NAME, reason_of_status
from solora_node.net.session import ExchangeSession, SessionAborted
from solora_node.protocol.messages import ExchangeResult, Hello, NodeStatus, PeerContext
from solora_node.protocol.reasons import Reason, WireError

log = logging.getLogger("solora_node.net.client")


def _rpc_failure(err: grpc.aio.AioRpcError) -> tuple[Reason, str]:
    details = err.details() or str(err.code())
    return reason_of_status(err.code(), details), details


@dataclass(frozen=True)
class HandshakeOutcome:
    reason: Reason
    message: str = ""
    peer: Hello | None = None

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK


class PeerClient:
    """Dials peers on behalf of a node's store; without one it can only ask status and health."""

    session_class = ExchangeSession  # fault-injection tests substitute a subclass

    def __init__(
        self,
        store: BlockStore | None = None,
        *,
        limits: WireLimits | None = None,
        tls: TlsMaterial | None,
        allow_node_ids: Collection[str] | None = None,
        observer: WireObserver | None = None,
    ) -> None:
        self._store = store
        self.limits = limits or WireLimits()
        self.tls = tls
        self.allow = frozenset(allow_node_ids) if allow_node_ids is not None else None
        self.observer = observer or NullObserver()
        self.refusal_log = RefusalLog()
        self._channels: dict[tuple[str, str | None], grpc.aio.Channel] = {}
        if tls is None:
            log.warning("INSECURE: dialling peers over plaintext gRPC (network.insecure: true)")

    @property
    def store(self) -> BlockStore:
        """The node side of handshakes and exchanges (status and health need none)."""
        if self._store is None:
            raise RuntimeError("this PeerClient has no block store: it can only ask status")
        return self._store

    # ------------------------------------------------------------ channels

    def channel(self, address: str, expected_node_id: str | None = None) -> grpc.aio.Channel:
        """A cached channel. Under TLS the server certificate must name expected_node_id
        (SAN DNS entry), or, when it is None, the dialled host (IP or DNS SAN)."""
        key = (address, expected_node_id)
        channel = self._channels.get(key)
        if channel is None:
            options = channel_options(self.limits)
            if self.tls is None:
                channel = grpc.aio.insecure_channel(address, options=options)
            else:
                if expected_node_id is not None:
                    options.append(("grpc.ssl_target_name_override", expected_node_id))
                channel = grpc.aio.secure_channel(
                    address, self.tls.channel_credentials(), options=options
                )
            self._channels[key] = channel
        return channel

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()

    def stub(self, address: str, expected_node_id: str | None) -> service_pb2_grpc.SoloraStub:
        """A stub on the cached channel (raw-frame tests speak the protocol through it)."""
        return service_pb2_grpc.SoloraStub(self.channel(address, expected_node_id))  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------ checks

    def _check_reply(
        self, reply: handshake_pb2.HelloReply, expected_node_id: str | None
    ) -> tuple[Verdict, PeerContext | None]:
        reason = Reason.from_proto(reply.reason)
        if reason is not Reason.OK:
            return Verdict(reason, reply.message), None
        try:
            remote = hello_from_proto(reply.hello)
        except WireError as err:
            return Verdict(err.reason, err.detail), None
        # With an expected id, TLS already checked the server's certificate names it.
        verdict = check_hello(
            self.store.hello(),
            remote,
            secure=False,
            certified_id=expected_node_id,
            allow_node_ids=self.allow,
        )
        if not verdict.ok:
            return verdict, None
        certified = expected_node_id if self.tls is not None else None
        return verdict, PeerContext(hello=remote, certified_id=certified)

    def _refused(self, peer: str, verdict: Verdict, by_me: bool) -> None:
        self.observer.handshake_refused(peer, verdict.reason, by_me=by_me)
        what = "handshake" if by_me else "handshake (the peer refused ours)"
        self.refusal_log.refused(peer, verdict.reason, verdict.message, what=what)

    def _allowed(self, expected_node_id: str | None) -> bool:
        return self.allow is None or expected_node_id is None or expected_node_id in self.allow

    # ------------------------------------------------------------ calls

    async def handshake(
        self, address: str, expected_node_id: str | None = None, timeout: float | None = None
    ) -> HandshakeOutcome:
        """Check compatibility and learn the peer's hello (peer exchange, liveness)."""
        if not self._allowed(expected_node_id):
            return HandshakeOutcome(
                Reason.NOT_AUTHORISED, f"{expected_node_id!r} is not on the allow-list"
            )
        request = hello_to_proto(self.store.hello())
        try:
            reply = await self.stub(address, expected_node_id).Handshake(
                request, timeout=timeout or self.limits.chunk_deadline_s
            )
        except grpc.aio.AioRpcError as err:
            return HandshakeOutcome(*_rpc_failure(err))
        verdict, peer = self._check_reply(reply, expected_node_id)
        if peer is None:
            self._refused(
                expected_node_id or address,
                verdict,
                by_me=Reason.from_proto(reply.reason) is Reason.OK,
            )
            return HandshakeOutcome(verdict.reason, verdict.message)
        self.store.observe_peer(peer)
        return HandshakeOutcome(Reason.OK, peer=peer.hello)

    async def exchange(self, address: str, expected_node_id: str | None = None) -> ExchangeResult:
        """One exchange with a neighbour, both directions; never raises for peer problems."""
        started = time.monotonic()
        peer_name = expected_node_id or address

        def failed(reason: Reason, message: str) -> ExchangeResult:
            result = ExchangeResult(
                peer=peer_name,
                round=self.store.hello().round,
                reason=reason,
                message=message,
                finished_unix=time.time(),
                duration_s=time.monotonic() - started,
            )
            self.observer.exchange_finished(result)
            return result

        if not self._allowed(expected_node_id):
            return failed(Reason.NOT_AUTHORISED, f"{expected_node_id!r} is not on the allow-list")
        local = self.store.hello()
        call = exchange_call(self.channel(address, expected_node_id))(
            timeout=self.limits.exchange_deadline_s
        )

        async def read() -> exchange_pb2.Frame | ChunkFrame | None:
            try:
                frame = await call.read()
            except grpc.aio.AioRpcError as err:
                raise SessionAborted(*_rpc_failure(err)) from None
            return None if frame is grpc.aio.EOF else frame  # type: ignore[return-value]

        async def write(frame: OutFrame) -> None:
            try:
                await call.write(frame)
            except grpc.aio.AioRpcError as err:
                raise SessionAborted(*_rpc_failure(err)) from None

        try:
            await write(exchange_pb2.Frame(round=local.round, hello=hello_to_proto(local)))
            first = await read()
            if not isinstance(first, exchange_pb2.Frame) or not first.HasField("hello_reply"):
                call.cancel()
                return failed(Reason.PROTOCOL_ERROR, "peer did not answer the hello")
            verdict, peer = self._check_reply(first.hello_reply, expected_node_id)
            if peer is None:
                call.cancel()
                self._refused(
                    peer_name,
                    verdict,
                    by_me=Reason.from_proto(first.hello_reply.reason) is Reason.OK,
                )
                return failed(verdict.reason, verdict.message)
        except SessionAborted as exc:
            call.cancel()
            return failed(exc.reason, exc.message)
        self.store.observe_peer(peer)
        session = self.session_class(
            self.store,
            peer,
            read,
            write,
            self.limits,
            self.observer,
            self.refusal_log,
            initiated=True,
        )
        result = await session.run()
        if result.ok:
            await call.done_writing()
            # Drain to the server's status so the stream closes cleanly.
            try:
                while await call.read() is not grpc.aio.EOF:
                    pass
            except grpc.aio.AioRpcError as err:
                log.debug("exchange with %s closed with %s", peer_name, err.code())
        else:
            call.cancel()
        return result

    async def status(
        self, address: str, expected_node_id: str | None = None, timeout: float = 5.0
    ) -> NodeStatus:
        try:
            reply: status_pb2.StatusReply = await self.stub(address, expected_node_id).Status(
                status_pb2.StatusRequest(), timeout=timeout
            )
        except grpc.aio.AioRpcError as err:
            reason, details = _rpc_failure(err)
            raise WireError(reason, f"status of {address}: {details}") from None
        return status_from_proto(reply)

    async def healthy(
        self, address: str, expected_node_id: str | None = None, timeout: float = 2.0
    ) -> bool:
        """Liveness: the standard health check, with a deadline (mDNS cannot tell)."""
        stub = health_pb2_grpc.HealthStub(self.channel(address, expected_node_id))  # type: ignore[no-untyped-call]
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
