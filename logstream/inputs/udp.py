"""The ``udp`` input: one JSON event per datagram (Logstash's ``udp`` input with ``json``).

::

    inputs:
      - type: udp
        listen: "127.0.0.1:5959"
        max_datagram_bytes: 65535
        receive_buffer_bytes: 8388608   # SO_RCVBUF to ask for (the default)

A trailing newline is optional (python-logstash sends none,
python-logstash-async sends one). Bad datagrams are kept the way the ``tcp``
input keeps bad lines: not a JSON object -> ``message`` with the raw text,
tagged ``_jsonparsefailure``; invalid UTF-8 -> replaced, ``_utf8error``;
longer than ``max_datagram_bytes`` -> cut, ``_linetoolong``. Empty datagrams
are skipped. Events without ``host`` get the sender's IP address.

UDP has no flow control: when the ingest buffer is full the events are
refused and counted as ``ingest_full`` drops. Datagrams the kernel dropped
because the socket's receive buffer was full (a burst faster than logstream
reads) are counted as ``receive_buffer`` drops: Linux keeps a running count per
socket (the ``drops`` column of ``/proc/net/udp``), read every second and at
stop. The input asks for an 8 MiB receive buffer; the kernel caps it at
``net.core.rmem_max`` (logged once at start when it did; raise it with
``sysctl -w net.core.rmem_max=16777216``). Datagrams that arrive within one
turn of the event loop (uvloop reads up to 32 per wakeup) are offered as one
batch, so the per-batch costs downstream are not paid per datagram.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any, Literal, cast

from pydantic import Field, field_validator

from logstream.buffer import BatchBuffer
from logstream.event import Batch, decode_json
from logstream.inputs.tcp import too_long_event
from logstream.metrics import DecodeIssue, UnitMetrics
from logstream.netaddr import parse_listen
from logstream.units import BuildContext, Input, InputConfig

log = logging.getLogger(__name__)

# SO_RCVBUF asked for by default: about 8 s of 1 kB datagrams at 1k/s, or a 30k burst
# of 250-byte ones. Linux caps it at net.core.rmem_max.
DEFAULT_RECEIVE_BUFFER = 8 * 1024 * 1024
# How often the kernel's drop count of the socket is read (and at stop).
DROPS_POLL_SECS = 1.0


class UdpInputConfig(InputConfig):
    """Receive JSON events over UDP, one per datagram."""

    type: Literal["udp"]
    listen: str = Field(
        default="127.0.0.1:5959",
        description="host:port to listen on; port 0 picks any free port.",
    )
    max_datagram_bytes: int = Field(
        default=65_535,
        ge=1,
        le=65_535,
        description="Longer datagrams are cut to this size and tagged _linetoolong.",
    )
    receive_buffer_bytes: int | None = Field(
        default=DEFAULT_RECEIVE_BUFFER,
        ge=1024,
        description="Socket receive buffer (SO_RCVBUF) to ask for; the kernel caps it at "
        "net.core.rmem_max. Larger absorbs bursts. null: the system's default.",
    )

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    def build(self, name: str, ctx: BuildContext) -> UdpInput:
        return UdpInput(self, name, ctx.registry.unit(name, "input"))


class UdpInput(Input):
    """A bound datagram socket feeding the ingest buffer with ``offer``."""

    def __init__(self, config: UdpInputConfig, name: str, metrics: UnitMetrics) -> None:
        super().__init__(name, metrics)
        self.config = config
        self.host, self.port = parse_listen(config.listen)
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Receiver | None = None
        self._address: tuple[str, int] | None = None
        self._drops = _KernelDrops(None, 0)
        self._drops_task: asyncio.Task[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` (the real port when ``listen`` asked for port 0)."""
        if self._address is None:
            raise RuntimeError(f"udp input {self.name!r} has not started")
        return self._address

    @property
    def receive_buffer_bytes(self) -> int:
        """The SO_RCVBUF the kernel granted (Linux reports twice the usable size)."""
        if self._transport is None:
            raise RuntimeError(f"udp input {self.name!r} is not listening")
        sock = self._transport.get_extra_info("socket")
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def _new_receiver(self, ingest: BatchBuffer, loop: asyncio.AbstractEventLoop) -> _Receiver:
        """The datagram protocol object; inputs with another payload format override it."""
        return _Receiver(self, ingest, loop)

    async def start(self, ingest: BatchBuffer) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self.host, self.port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
        sock = _bind(infos[0], self.config.receive_buffer_bytes, self.reuse_port)
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: self._new_receiver(ingest, loop), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        self._transport = transport
        self._protocol = protocol
        host, port = sock.getsockname()[:2]
        self._address = (host, port)
        self._check_receive_buffer()
        self._drops = _KernelDrops.of(sock)
        if self._drops.table is not None:
            self._drops_task = asyncio.create_task(self._poll_drops(), name=f"drops:{self.name}")
        log.info("udp input %s listening on %s:%d", self.name, *self.address)

    def _check_receive_buffer(self) -> None:
        wanted = self.config.receive_buffer_bytes
        granted = self.receive_buffer_bytes // 2  # Linux reports twice the usable size
        if wanted is not None and granted < wanted:
            log.warning(
                "udp input %s: receive buffer %d bytes asked, %d granted (capped by the "
                "net.core.rmem_max sysctl; raise it to absorb larger bursts)",
                self.name,
                wanted,
                granted,
            )

    def count_receive_drops(self) -> int:
        """Read the kernel's drop count of the socket now and count what is new as
        ``receive_buffer`` drops; the total counted so far."""
        new = self._drops.read()
        if new:
            self.metrics.drop(new, "receive_buffer")
        return self._drops.counted

    async def _poll_drops(self) -> None:
        while True:
            await asyncio.sleep(DROPS_POLL_SECS)
            self.count_receive_drops()

    async def stop(self) -> None:
        if self._drops_task is not None:
            self._drops_task.cancel()
            self._drops_task = None
        if self._transport is not None:
            self.count_receive_drops()  # the last ones, while the socket still exists
        transport, self._transport = self._transport, None
        try:
            if self._protocol is not None:
                self._protocol.stop()
            if transport is not None:
                transport.close()
                await asyncio.sleep(0)  # let connection_lost run
        except Exception:
            log.exception("udp input %s: error while stopping", self.name)


def _bind(
    info: tuple[Any, ...], receive_buffer_bytes: int | None, reuse_port: bool = False
) -> socket.socket:
    """A bound UDP socket for one ``getaddrinfo`` result."""
    family, kind, proto, _, address = info
    sock = socket.socket(family, kind, proto)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if receive_buffer_bytes is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _KernelDrops:
    """The kernel's running count of datagrams dropped on one socket (receive buffer
    full), from the ``drops`` column of ``/proc/net/udp`` or ``udp6`` for its inode.
    ``table`` is None where there is no such file (not Linux): nothing is counted."""

    def __init__(self, table: str | None, inode: int) -> None:
        self.table = table
        self.inode = inode
        self.counted = 0

    @classmethod
    def of(cls, sock: socket.socket) -> _KernelDrops:
        table = "/proc/net/udp6" if sock.family == socket.AF_INET6 else "/proc/net/udp"
        if not os.path.exists(table):
            log.debug("no %s: kernel receive-buffer drops are not counted", table)
            return cls(None, 0)
        return cls(table, os.fstat(sock.fileno()).st_ino)

    def read(self) -> int:
        """Drops since the last read."""
        if self.table is None:
            return 0
        inode = str(self.inode)
        try:
            with open(self.table, encoding="ascii") as rows:
                next(rows, None)  # the header
                for row in rows:
                    fields = row.split()
                    if len(fields) > 12 and fields[9] == inode:
                        total = int(fields[-1])
                        new, self.counted = total - self.counted, total
                        return max(new, 0)
        except (OSError, ValueError) as error:
            log.debug("reading %s: %s", self.table, error)
        return 0


class _Receiver(asyncio.DatagramProtocol):
    """Decodes datagrams into a pending batch, offered once per loop turn."""

    def __init__(self, owner: UdpInput, ingest: BatchBuffer, loop: asyncio.AbstractEventLoop):
        self._metrics = owner.metrics
        self._name = owner.name
        self._ingest = ingest
        self._loop = loop
        self._limit = owner.config.max_datagram_bytes
        self._pending: Batch = []
        self._stopped = False

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._stopped:
            return
        metrics = self._metrics
        metrics.bytes_in += len(data)
        if data.endswith(b"\n"):
            data = data[:-1]
        if len(data) > self._limit:
            event = too_long_event(data, self._limit, metrics)
        else:
            event, issue = decode_json(data)
            if issue is not None:
                if not data.strip():
                    return
                metrics.decode_issue(cast(DecodeIssue, issue))
        if "host" not in event:
            event["host"] = addr[0]
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(event)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        if self._ingest.offer(batch):
            self._metrics.events_in += len(batch)
        else:
            self._metrics.drop(len(batch), "ingest_full")

    def error_received(self, exc: Exception) -> None:
        # ICMP errors and the like on a receive-only socket: nothing to do.
        log.debug("udp input %s: %s", self._name, exc)

    def stop(self) -> None:
        """Offer what is pending and take no more."""
        self._flush()
        self._stopped = True
