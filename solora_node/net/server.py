"""The gRPC server of a node: Handshake, Exchange and Status of solora.v1, plus grpc.health.v1."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Collection, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from solora_node._proto import exchange_pb2, handshake_pb2, service_pb2_grpc, status_pb2
from solora_node.net.convert import hello_from_proto, hello_to_proto, status_to_proto
from solora_node.net.frames import ChunkFrame, exchange_handler
from solora_node.net.handshake import Verdict, check_hello
from solora_node.net.limits import WireLimits, server_options
from solora_node.net.observe import NullObserver, RefusalLog, WireObserver
from solora_node.net.port import BlockStore
from solora_node.net.security import TlsMaterial, peer_certified_id
from solora_node.net.session import ExchangeSession, SessionAborted
from solora_node.protocol.messages import Hello, PeerContext
from solora_node.protocol.reasons import Reason, WireError

log = logging.getLogger("solora_node.net.server")

SERVICE_NAME = "solora.v1.Solora"

_STATUS_REASONS = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: Reason.TOO_LARGE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Reason.TIMEOUT,
    grpc.StatusCode.PERMISSION_DENIED: Reason.NOT_AUTHORISED,
}
_REASON_VALUES = frozenset(r.value for r in Reason)
# A TLS refusal happens before any RPC, so it only shows in the error text.
_TLS_REASONS = (
    ("Hostname Verification", Reason.IDENTITY_MISMATCH),  # cert does not name the expected node
    ("certificate has expired", Reason.CERT_EXPIRED),
    ("certificate is not yet valid", Reason.CERT_EXPIRED),
    ("CERTIFICATE_VERIFY_FAILED", Reason.UNKNOWN_CA),  # cert not from the federation CA
)


def reason_of_status(code: grpc.StatusCode | None, details: str = "") -> Reason:
    """A gRPC failure from the transport, as one of our reasons (for counting)."""
    if code == grpc.StatusCode.ABORTED:  # our server ends a failed exchange with "reason: ..."
        name = details.partition(":")[0]
        if name in _REASON_VALUES:
            return Reason(name)
    for needle, reason in _TLS_REASONS:
        if needle in details:
            return reason
    return _STATUS_REASONS.get(code, Reason.UNAVAILABLE) if code is not None else Reason.UNAVAILABLE


class _StreamSlots:
    """Concurrent Exchange streams per peer identity, bounded (over the bound: BUSY)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._active: Counter[str] = Counter()

    def acquire(self, peer: str) -> bool:
        if self._active[peer] >= self._limit:
            return False
        self._active[peer] += 1
        return True

    def release(self, peer: str) -> None:
        self._active[peer] -= 1
        if self._active[peer] <= 0:
            del self._active[peer]

    def active(self, peer: str) -> int:
        return self._active[peer]


def _add_service(servicer: SoloraServicer, server: grpc.aio.Server) -> None:
    """solora.v1.Solora as the generated add_SoloraServicer_to_server registers it, except
    that Exchange reads its frames through net/frames.py (chunk data is not copied)."""
    handlers = {
        "Handshake": grpc.unary_unary_rpc_method_handler(
            servicer.Handshake,
            request_deserializer=handshake_pb2.Hello.FromString,
            response_serializer=handshake_pb2.HelloReply.SerializeToString,
        ),
        "Exchange": exchange_handler(servicer.Exchange),
        "Status": grpc.unary_unary_rpc_method_handler(
            servicer.Status,
            request_deserializer=status_pb2.StatusRequest.FromString,
            response_serializer=status_pb2.StatusReply.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class SoloraServicer(service_pb2_grpc.SoloraServicer):
    """The protocol logic of the server; transport-independent apart from the context."""

    def __init__(
        self,
        store: BlockStore,
        limits: WireLimits,
        *,
        secure: bool,
        allow_node_ids: Collection[str] | None,
        observer: WireObserver,
    ) -> None:
        self.store = store
        self.limits = limits
        self.secure = secure
        self.allow = frozenset(allow_node_ids) if allow_node_ids is not None else None
        self.observer = observer
        self.refusal_log = RefusalLog()
        self.slots = _StreamSlots(limits.max_streams_per_peer)
        self.stopping = False
        # The node's identity check (a second live holder of an id): a refusal or None.
        self.admit: Callable[[Hello], Verdict | None] | None = None

    def _verdict(
        self, request: handshake_pb2.Hello, context: grpc.aio.ServicerContext
    ) -> tuple[Verdict, PeerContext | None]:
        certified = peer_certified_id(context) if self.secure else None
        try:
            remote = hello_from_proto(request)
        except WireError as err:
            return Verdict(err.reason, err.detail), None
        verdict = check_hello(
            self.store.hello(),
            remote,
            secure=self.secure,
            certified_id=certified,
            allow_node_ids=self.allow,
        )
        if verdict.ok and self.admit is not None:
            verdict = self.admit(remote) or verdict
        if self.stopping and verdict.ok:
            verdict = Verdict(Reason.SHUTTING_DOWN, "node is stopping")
        who = certified or remote.node_id
        if not verdict.ok:
            self.observer.handshake_refused(who, verdict.reason, by_me=True)
            self.refusal_log.refused(who, verdict.reason, verdict.message, what="handshake")
            return verdict, None
        return verdict, PeerContext(hello=remote, certified_id=certified, address=context.peer())

    def _reply(self, verdict: Verdict) -> handshake_pb2.HelloReply:
        reply = handshake_pb2.HelloReply(reason=verdict.reason.to_proto(), message=verdict.message)
        if verdict.ok:  # refused peers learn why, not what this node holds
            reply.hello.CopyFrom(hello_to_proto(self.store.hello()))
        return reply

    async def Handshake(
        self, request: handshake_pb2.Hello, context: grpc.aio.ServicerContext
    ) -> handshake_pb2.HelloReply:
        verdict, peer = self._verdict(request, context)
        if peer is not None:
            self.store.observe_peer(peer)
        return self._reply(verdict)

    async def Status(
        self, request: status_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.StatusReply:
        # Under TLS only federation members reach this point (client certs are required).
        if self.secure and self.allow is not None:
            caller = peer_certified_id(context)
            if caller not in self.allow:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not on the allow-list")
        return status_to_proto(self.store.status())

    async def _read(
        self, context: grpc.aio.ServicerContext
    ) -> exchange_pb2.Frame | ChunkFrame | None:
        try:
            frame = await context.read()
        except (grpc.RpcError, asyncio.InvalidStateError) as err:
            code = err.code() if isinstance(err, grpc.aio.AioRpcError) else None
            raise SessionAborted(reason_of_status(code, str(err)), f"stream broke: {err}") from None
        if frame is grpc.aio.EOF:
            return None
        return frame  # type: ignore[return-value]

    async def Exchange(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        who = (peer_certified_id(context) if self.secure else None) or context.peer()
        try:
            first = await asyncio.wait_for(self._read(context), self.limits.chunk_deadline_s)
        except asyncio.TimeoutError:
            # A stream opened and left silent holds a slot of the server: count it.
            self.observer.handshake_refused(who, Reason.TIMEOUT, by_me=True)
            return
        except SessionAborted:
            return
        if not isinstance(first, exchange_pb2.Frame) or not first.HasField("hello"):
            verdict = Verdict(Reason.PROTOCOL_ERROR, "an exchange starts with a hello")
            self.observer.handshake_refused(who, Reason.PROTOCOL_ERROR, by_me=True)
            self.refusal_log.refused(who, Reason.PROTOCOL_ERROR, verdict.message, what="handshake")
            await context.write(exchange_pb2.Frame(hello_reply=self._reply(verdict)))
            return
        verdict, peer = self._verdict(first.hello, context)
        if peer is None:
            await context.write(exchange_pb2.Frame(hello_reply=self._reply(verdict)))
            return
        slot = peer.certified_id or peer.hello.node_id
        if not self.slots.acquire(slot):
            busy = Verdict(Reason.BUSY, f"{self.limits.max_streams_per_peer} streams already open")
            self.observer.handshake_refused(slot, Reason.BUSY, by_me=True)
            await context.write(exchange_pb2.Frame(hello_reply=self._reply(busy)))
            return
        try:
            self.store.observe_peer(peer)
            round_ = self.store.hello().round
            await context.write(exchange_pb2.Frame(round=round_, hello_reply=self._reply(verdict)))
            session = ExchangeSession(
                self.store,
                peer,
                lambda: self._read(context),
                context.write,
                self.limits,
                self.observer,
                self.refusal_log,
                initiated=False,
            )
            result = await session.run()
        finally:
            self.slots.release(slot)
        if not result.ok:
            log.info(
                "exchange with %s ended: %s (%s)", result.peer, result.reason.value, result.message
            )
            # The reason travels in the status, so the client counts what we counted.
            await context.abort(grpc.StatusCode.ABORTED, f"{result.reason.value}: {result.message}")


class PeerServer:
    """Owns the grpc.aio server: bind, serve, stop."""

    def __init__(
        self,
        store: BlockStore,
        *,
        limits: WireLimits | None = None,
        tls: TlsMaterial | None,
        host: str = "127.0.0.1",
        port: int = 0,
        allow_node_ids: Collection[str] | None = None,
        observer: WireObserver | None = None,
        extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
    ) -> None:
        self.limits = limits or WireLimits()
        # More services on the same port and credentials (benchmarks, admin).
        self.extra_handlers = tuple(extra_handlers)
        self.tls = tls
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.servicer = SoloraServicer(
            store,
            self.limits,
            secure=tls is not None,
            allow_node_ids=allow_node_ids,
            observer=observer or NullObserver(),
        )
        self.health = HealthServicer()
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def start(self) -> int:
        """Bind and serve; returns the port (the chosen one when port is 0)."""
        server = grpc.aio.server(options=server_options(self.limits))
        _add_service(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.extra_handlers:
            server.add_generic_rpc_handlers(self.extra_handlers)
        bind = (
            f"[{self.host}]:{self.requested_port}"
            if ":" in self.host
            else f"{self.host}:{self.requested_port}"
        )
        if self.tls is not None:
            port = server.add_secure_port(bind, self.tls.server_credentials())
        else:
            log.warning("INSECURE: serving plaintext gRPC on %s (network.insecure: true)", bind)
            port = server.add_insecure_port(bind)
        if port == 0:
            raise OSError(f"cannot bind gRPC server to {bind}")
        await server.start()
        self._server, self.port = server, port
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return port

    async def stop(self, grace: float = 2.0) -> None:
        """Refuse new exchanges, report NOT_SERVING, let running ones finish within grace."""
        if self._server is None:
            return
        self.servicer.stopping = True
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)
        self._server = None

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()
