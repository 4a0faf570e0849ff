"""The addresses a config listens on: overlaps between its own units, and ports in use.

Two inputs on the same address and protocol cannot both bind (``run`` would die
with a bare ``[Errno 98]``); :func:`overlaps` finds them in the config itself,
so ``check`` and ``run`` refuse the config before anything starts. A port that
another process already holds is a fact of the machine, not of the config:
:func:`ports_in_use` binds each address briefly (as the inputs do, with
``SO_REUSEADDR`` for TCP) and says which input cannot have its port.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from logstream.netaddr import parse_listen

Protocol = Literal["tcp", "udp"]

# The protocols each listening input type uses (syslog: its ``protocol`` setting).
_PROTOCOLS: dict[str, tuple[Protocol, ...]] = {
    "tcp": ("tcp",),
    "udp": ("udp",),
    "beats": ("tcp",),
    "http": ("tcp",),
}
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class Listener:
    """One address a unit binds: ``where`` is its key path, ``name`` its unit name."""

    where: str
    name: str
    host: str
    port: int
    protocol: Protocol

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.protocol}"

    def describe(self) -> str:
        return f"{self.where} {self.name}" if self.name and self.name != self.where else self.where


def _protocols(unit: Any) -> tuple[Protocol, ...]:
    if unit.type == "syslog":
        chosen = getattr(unit, "protocol", "both")
        if chosen == "tcp":
            return ("tcp",)
        return ("udp",) if chosen == "udp" else ("udp", "tcp")
    return _PROTOCOLS.get(unit.type, ())


def listeners(config: Any) -> list[Listener]:
    """Every address ``config`` (a :class:`~logstream.config.Config`) listens on."""
    names: dict[int, str] = config.unit_names()
    found: list[Listener] = []
    for i, unit in enumerate(config.inputs):
        listen = getattr(unit, "listen", None)
        if not isinstance(listen, str):
            continue
        host, port = parse_listen(listen)
        for protocol in _protocols(unit):
            found.append(
                Listener(f"inputs[{i}] ({unit.type})", names[id(unit)], host, port, protocol)
            )
    monitor = config.monitor
    if monitor.enabled:
        host, port = parse_listen(monitor.listen)
        found.append(Listener("monitor.listen", "monitor", host, port, "tcp"))
    return found


def _same_address(a: Listener, b: Listener) -> bool:
    if a.protocol != b.protocol or a.port != b.port or a.port == 0:
        return False
    if a.host == b.host:
        return True
    return _covers(a.host, b.host, a.protocol) or _covers(b.host, a.host, a.protocol)


def _covers(wildcard: str, host: str, protocol: Protocol) -> bool:
    """Whether binding ``wildcard`` takes the port of ``host`` too. asyncio's TCP
    servers bind ``::`` IPv6-only; the UDP inputs' ``::`` socket is dual-stack."""
    if wildcard not in _WILDCARDS:
        return False
    return (":" in wildcard) == (":" in host) or (wildcard == "::" and protocol == "udp")


def overlaps(found: Sequence[Listener]) -> list[str]:
    """One error line per pair of units that would bind the same address and protocol."""
    errors = []
    for index, first in enumerate(found):
        for second in found[index + 1 :]:
            if _same_address(first, second):
                errors.append(
                    f"{second.describe()}: listens on {second.address}, as "
                    f"{first.describe()} does ({first.address}); two units cannot share "
                    "an address and protocol: give one another port"
                )
    return errors


def _why(error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return "already in use (another process listens there; is logstream already running?)"
    if error.errno == errno.EACCES:
        return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if error.errno == errno.EADDRNOTAVAIL:
        return "that address is not one of this machine's"
    return error.strerror or str(error)


def try_bind(host: str, port: int, protocol: Protocol) -> OSError | None:
    """Bind ``host:port`` as an input would, and let it go at once. The error, or None."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    try:
        infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host!r}: {error.strerror}")
    for family, socktype, proto, _, address in infos:
        with socket.socket(family, socktype, proto) as sock:
            try:
                if protocol == "tcp":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                if protocol == "tcp":
                    sock.listen(1)
            except OSError as error:
                return error
    return None


def ports_in_use(found: Iterable[Listener]) -> list[str]:
    """One line per fixed-port address that cannot be bound now, naming the unit."""
    problems = []
    for listener in found:
        if listener.port == 0:
            continue
        error = try_bind(listener.host, listener.port, listener.protocol)
        if error is not None:
            problems.append(f"{listener.describe()}: {listener.address}: {_why(error)}")
    return problems


def bind_error_text(name: str, listen: str | None, error: OSError) -> str:
    """What ``run`` says when an input cannot bind: the input, the address, the reason."""
    where = f" on {listen}" if listen else ""
    return f"input {name} cannot listen{where}: {_why(error)} [errno {error.errno}]"
