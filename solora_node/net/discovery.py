"""mDNS discovery: advertise this node as `_solora._tcp.local.` and feed the peers we
hear about into a MembershipView.

Event driven: the zeroconf browser calls us when a service appears, changes or
says goodbye; we resolve it and report it. mDNS cannot tell that a node died
without a goodbye (its records live for minutes), so liveness is left to the
node's health checks (MembershipView.mark_alive / mark_failed).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import logging
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import ifaddr
from zeroconf import (
    InterfaceChoice,
    IPVersion,
    NonUniqueNameException,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from solora_node.config import NodeConfig
from solora_node.errors import SoloraError
from solora_node.net.membership import MembershipView, PeerInfo

log = logging.getLogger(__name__)

SERVICE_TYPE = "_solora._tcp.local."
RESOLVE_TIMEOUT_S = 3.0
GOODBYE_TIMEOUT_S = 3.0
# How long to ask for our own name before claiming it. zeroconf's probing alone listens
# for ~0.5 s and a responder that answered a multicast less than a second ago stays
# silent (RFC 6762 rate limit), so a busy machine could miss a live twin; this query asks
# for a unicast answer and keeps asking (0.2, 0.4, 0.8 s apart) for the whole window.
CLAIM_CHECK_S = 1.5
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_LABEL_MAX = 63  # bytes in one DNS label

InterfacesSetting = list[str] | Literal["all"]


class DiscoveryError(SoloraError):
    """mDNS cannot start: bad interface setting, sockets unavailable, or a name clash."""


@dataclass(frozen=True)
class Advertisement:
    """What this node announces; ports are the ones actually bound (0 in config = ephemeral)."""

    node_id: str
    federation: str
    task: str
    grpc_port: int
    metrics_port: int  # 0: no metrics endpoint
    protocol: int
    fingerprint: str
    hosts: tuple[str, ...]
    incarnation: int = 0

    @property
    def instance_name(self) -> str:
        """One DNS label: readable node id plus a hash of (federation, id).

        The hash keeps names unique across federations sharing a LAN and stands in
        for characters ('.') that zeroconf cannot carry in an instance label.
        """
        digest = hashlib.sha256(f"{self.federation}/{self.node_id}".encode()).hexdigest()[:8]
        readable = self.node_id.replace(".", "_")[: _LABEL_MAX - len(digest) - 1]
        return f"{readable}-{digest}"

    def txt(self) -> dict[str, str]:
        return {
            "id": self.node_id,
            "fed": self.federation,
            "task": self.task,
            "grpc": str(self.grpc_port),
            "metrics": str(self.metrics_port),
            "proto": str(self.protocol),
            "fp": self.fingerprint,
            "inc": str(self.incarnation),
        }

    @classmethod
    def from_config(
        cls,
        config: NodeConfig,
        *,
        grpc_port: int,
        metrics_port: int,
        protocol: int,
        fingerprint: str,
        incarnation: int = 0,
    ) -> Advertisement:
        """This node's advertisement; pass the ports actually bound (config may say 0)."""
        return cls(
            node_id=config.node.id,
            federation=config.federation.id,
            task=config.task.name,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            protocol=protocol,
            fingerprint=fingerprint,
            incarnation=incarnation,
            hosts=advertise_hosts(
                config.network.advertise_host,
                config.network.listen_host,
                config.discovery.interfaces,
            ),
        )

    def as_peer(self) -> PeerInfo:
        return PeerInfo(
            node_id=self.node_id,
            federation=self.federation,
            task=self.task,
            host=self.hosts[0] if self.hosts else "",
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            protocol=self.protocol,
            fingerprint=self.fingerprint,
            source="self",
            incarnation=self.incarnation,
        )


def zeroconf_interfaces(setting: InterfacesSetting) -> InterfaceChoice | list[str]:
    """Config `discovery.interfaces` -> zeroconf's choice; names the bad entry if any."""
    if setting == "all":
        return InterfaceChoice.All
    if not setting:
        raise DiscoveryError("discovery.interfaces: expected 'all' or a non-empty address list")
    for address in setting:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise DiscoveryError(
                f"discovery.interfaces: {address!r} is not an IP address of an interface"
            ) from None
    return list(setting)


def advertise_hosts(
    advertise_host: str | None, listen_host: str, interfaces: InterfacesSetting
) -> tuple[str, ...]:
    """The addresses peers should dial, most specific setting first.

    advertise_host > a concrete listen_host > the mDNS interface list > every
    non-loopback address of this machine (loopback only if there is nothing else).
    """
    if advertise_host:
        return (advertise_host,)
    if not (_is_ip(listen_host) and ipaddress.ip_address(listen_host).is_unspecified):
        return (listen_host,)
    if interfaces != "all":
        return tuple(interfaces)
    addresses: list[str] = []
    loopback: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not ip.is_IPv4:
                continue  # IPv6 needs a scope id to be dialable; keep the TXT simple
            assert isinstance(ip.ip, str)
            (loopback if ipaddress.ip_address(ip.ip).is_loopback else addresses).append(ip.ip)
    return tuple(addresses or loopback)


def peer_from_txt(properties: Mapping[bytes, bytes | None], host: str) -> PeerInfo:
    """Parse a TXT record into a PeerInfo; ValueError names what is wrong."""
    txt: dict[str, str] = {}
    for key, value in properties.items():
        if value is not None:
            txt[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    missing = [k for k in ("id", "fed", "task", "grpc", "metrics", "proto", "fp") if k not in txt]
    if missing:
        raise ValueError(f"TXT lacks {', '.join(missing)}")
    if not _NODE_ID.match(txt["id"]):
        raise ValueError(f"TXT id {txt['id']!r} is not a node id")
    grpc, metrics, proto = (_int(txt, k) for k in ("grpc", "metrics", "proto"))
    if not 0 < grpc < 65536 or not 0 <= metrics < 65536:
        raise ValueError(f"TXT ports out of range (grpc={grpc}, metrics={metrics})")
    return PeerInfo(
        node_id=txt["id"],
        federation=txt["fed"],
        task=txt["task"],
        host=host,
        grpc_port=grpc,
        metrics_port=metrics,
        protocol=proto,
        fingerprint=txt["fp"],
        source="mdns",
        incarnation=_int(txt, "inc") if "inc" in txt else 0,  # older nodes send none
    )


def _int(txt: dict[str, str], key: str) -> int:
    try:
        return int(txt[key])
    except ValueError:
        raise ValueError(f"TXT {key}={txt[key]!r} is not an integer") from None


class Discovery:
    """Advertise and browse `_solora._tcp.local.` on the configured interfaces.

    Usage: `await Discovery(advert, view, interfaces=cfg.discovery.interfaces).start()`,
    membership changes arrive through `view.add_listener`, `await close()` sends
    the goodbye. Must be started inside the event loop that runs the node.
    """

    def __init__(
        self,
        advert: Advertisement,
        view: MembershipView,
        *,
        interfaces: InterfacesSetting,
        resolve_timeout_s: float = RESOLVE_TIMEOUT_S,
    ) -> None:
        if not advert.hosts:
            raise DiscoveryError("discovery: no address to advertise; set network.advertise_host")
        if not 0 < advert.grpc_port < 65536:
            raise DiscoveryError(
                f"discovery: advertise the bound gRPC port, not {advert.grpc_port}"
            )
        self.advert = advert
        self.view = view
        self._interfaces = zeroconf_interfaces(interfaces)
        self._resolve_timeout_ms = int(resolve_timeout_s * 1000)
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._node_of_name: dict[str, tuple[str, int]] = {}

    async def start(self) -> None:
        advert = self.advert
        addresses = await _resolve_addresses(advert.hosts)
        try:
            ip_version = _ip_version(self._interfaces)
            # One line on purpose: hooks flag any `Zeroconf(` call without `interfaces`.
            self._zc = AsyncZeroconf(interfaces=self._interfaces, ip_version=ip_version)
        except (OSError, RuntimeError) as exc:
            raise DiscoveryError(f"discovery: cannot open mDNS sockets ({exc})") from None
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{advert.instance_name}.{SERVICE_TYPE}",
            port=advert.grpc_port,
            properties=advert.txt(),
            server=f"{advert.instance_name}.local.",
            parsed_addresses=addresses,
        )
        try:
            if await self._name_taken(self._info.name):
                raise NonUniqueNameException
            announced = await self._zc.async_register_service(self._info)
            await announced
        except BaseException as exc:
            zc, self._zc, self._info = self._zc, None, None
            await zc.async_close()
            if isinstance(exc, NonUniqueNameException):
                raise DiscoveryError(
                    f"discovery: another node on this network advertises node id "
                    f"{advert.node_id!r} in federation {advert.federation!r}; "
                    "node ids must be unique"
                ) from None
            raise
        self._browser = AsyncServiceBrowser(
            self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_service_state_change]
        )
        log.info(
            "mDNS: advertising %s on %s (hosts %s)",
            advert.instance_name,
            "all interfaces" if self._interfaces is InterfaceChoice.All else self._interfaces,
            ",".join(advert.hosts),
        )

    async def _name_taken(self, name: str) -> bool:
        """True when a live responder answers for `name` (only this node should)."""
        assert self._zc is not None
        twin = AsyncServiceInfo(SERVICE_TYPE, name)
        return bool(await twin.async_request(self._zc.zeroconf, int(CLAIM_CHECK_S * 1000)))

    async def close(self) -> None:
        """Stop browsing, send the goodbye, close the sockets; safe to call twice."""
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        tasks = list(self._resolving.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._resolving.clear()
        if self._zc is not None:
            zc, self._zc = self._zc, None
            try:
                if self._info is not None:
                    # The first await queues the goodbye, the second waits until it is
                    # sent; closing before that would drop it and peers would keep us
                    # for minutes. Bounded, so shutdown stays within its deadline.
                    goodbye = await zc.async_unregister_service(self._info)
                    await asyncio.wait_for(goodbye, GOODBYE_TIMEOUT_S)
            except asyncio.TimeoutError:
                log.warning("mDNS: goodbye not sent within %.0f s", GOODBYE_TIMEOUT_S)
            finally:
                await zc.async_close()

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_service_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # Runs in the event loop (AsyncServiceBrowser); resolving needs I/O, so it
        # goes to a task, one per name: a newer event supersedes a pending resolve.
        pending = self._resolving.pop(name, None)
        if pending is not None:
            pending.cancel()
        if state_change is ServiceStateChange.Removed:
            known = self._node_of_name.pop(name, None)
            if known is not None:
                log.info("mDNS: %s said goodbye", known[0])
                self.view.goodbye(*known)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._resolving[name] = task
        task.add_done_callback(functools.partial(self._forget_task, name))

    def _forget_task(self, name: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(name) is task:
            del self._resolving[name]

    async def _resolve(self, name: str) -> None:
        if self._zc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._zc.zeroconf, self._resolve_timeout_ms):
            log.debug("mDNS: %s did not resolve within %d ms", name, self._resolve_timeout_ms)
            return
        hosts = info.parsed_scoped_addresses()
        try:
            if not hosts:
                raise ValueError("no address records")
            peer = peer_from_txt(info.properties, _preferred_host(hosts))
        except ValueError as exc:
            log.debug("mDNS: ignoring %s: %s", name, exc)
            self.view.count_ignored("malformed", name)
            return
        if self.view.report(peer):
            self._node_of_name[name] = (peer.node_id, peer.incarnation)
        elif peer.node_id != self.advert.node_id:
            log.debug("mDNS: ignoring %s (incompatible federation/fingerprint/protocol)", name)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _resolve_addresses(hosts: Sequence[str]) -> list[str]:
    """mDNS address records need IP literals; host names from the config are resolved once."""
    loop = asyncio.get_running_loop()
    addresses: list[str] = []
    for host in hosts:
        if _is_ip(host):
            found = [host]
        else:
            try:
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise DiscoveryError(
                    f"discovery: advertised host {host!r} does not resolve ({exc})"
                ) from None
            found = [str(info[4][0]) for info in infos]
        addresses += [a for a in found if a not in addresses]
    return addresses


def _ip_version(interfaces: InterfaceChoice | list[str]) -> IPVersion:
    if isinstance(interfaces, InterfaceChoice):
        return IPVersion.V4Only
    versions = {ipaddress.ip_address(a).version for a in interfaces}
    if versions == {6}:
        return IPVersion.V6Only
    return IPVersion.All if versions == {4, 6} else IPVersion.V4Only


def _preferred_host(hosts: Sequence[str]) -> str:
    """IPv4 first: it needs no scope id to dial."""
    for host in hosts:
        if ":" not in host:
            return host
    return hosts[0]
