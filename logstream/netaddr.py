"""Parsing ``host:port`` listen addresses."""

from __future__ import annotations


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:5959"``, ``"[::1]:5959"`` or ``":5959"`` (all interfaces) -> (host, port).

    Port 0 means any free port. Raises ``ValueError`` naming the bad value.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ValueError(f"listen must be host:port, value: {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"listen port must be a number, value: {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"listen port must be 0-65535, value: {value!r}")
    return host or "0.0.0.0", port
