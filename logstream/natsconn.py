"""What the ``nats`` sink and input share: servers, credentials, TLS, the connection.

::

    servers: ["nats://n1:4222", "tls://n2:4222"]   # or [local]: `logstream run` starts one
    user: logstream            # with password; or token; or nkey_seed_file; or creds_file
    password: ${NATS_PASSWORD}
    tls: {ca_file: ca.pem, cert_file: client.pem, key_file: client.key}

The client (nats-py) fails over between the servers by itself and learns the
cluster's other nodes from them; it never gives up reconnecting. No
credential is ever logged: URLs are shown with ``user:***@``, errors are
reported by type and text (nats-py's texts hold no secrets), and a
misconfigured file is named by its path only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NatsClient
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from logstream.units import UnitConfig

log = logging.getLogger(__name__)

LOCAL = "local"
_SCHEMES = ("nats", "tls", "ws", "wss")


class NatsTls(BaseModel):
    """TLS to the NATS servers (``tls://`` URLs, or a server that requires TLS)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = Field(default=None, description="CAs to trust (PEM); default: system.")
    cert_file: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(default=None, description="The client certificate's key.")
    server_name: str | None = Field(default=None, description="Name to check on the certificate.")

    @model_validator(mode="after")
    def _pair(self) -> NatsTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls cert_file and key_file go together: set both or neither")
        return self

    def context(self, unit: str) -> ssl.SSLContext:
        """The client context; ``ValueError`` naming the file that cannot be used."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as error:
                raise ValueError(
                    f"{unit}: tls ca_file {str(self.ca_file)!r} cannot be used: {error}"
                ) from None
        if self.cert_file is not None and self.key_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as error:
                raise ValueError(
                    f"{unit}: tls cert_file {str(self.cert_file)!r} / key_file "
                    f"{str(self.key_file)!r} cannot be used: {error}"
                ) from None
        return context


class NatsConnectionConfig(UnitConfig):
    """Connection settings of the nats sink and input."""

    servers: list[str] = Field(
        min_length=1,
        description="Server URLs (nats:// or tls://); the client fails over between them. "
        "[local]: a local JetStream server that `logstream run` starts.",
    )
    name: str | None = Field(default=None, description="Client name shown by the server.")
    user: str | None = Field(default=None, description="User (with password).")
    password: str | None = None
    token: str | None = Field(default=None, description="Auth token.")
    nkey_seed_file: Path | None = Field(default=None, description="File with an NKey seed.")
    creds_file: Path | None = Field(default=None, description="A .creds file (JWT and seed).")
    tls: NatsTls | None = None
    connect_timeout_secs: float = Field(default=2.0, gt=0)
    reconnect_wait_secs: float = Field(default=0.5, gt=0, description="Pause between reconnects.")

    @field_validator("servers", mode="before")
    @classmethod
    def _one_server_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("servers")
    @classmethod
    def _valid_servers(cls, servers: list[str]) -> list[str]:
        for server in servers:
            if server == LOCAL:
                continue
            parts = urlsplit(server if "://" in server else f"nats://{server}")
            try:
                parts.port  # noqa: B018 - raises for a bad port
            except ValueError:
                raise ValueError(f"{mask_url(server)!r}: bad port") from None
            if parts.scheme not in _SCHEMES or not parts.hostname:
                raise ValueError(
                    f"{mask_url(server)!r} must be a URL like nats://host:4222 or tls://host:4222"
                )
        return servers

    @field_validator("user", "password", "token")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None  # "${NATS_TOKEN:-}" unset gives ""

    @field_validator("nkey_seed_file", "creds_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _one_auth(self) -> NatsConnectionConfig:
        if (self.user is None) != (self.password is None):
            raise ValueError("user and password go together: set both or neither")
        ways = [
            self.user is not None,
            self.token is not None,
            self.nkey_seed_file is not None,
            self.creds_file is not None,
        ]
        if sum(ways) > 1:
            raise ValueError("set one of user/password, token, nkey_seed_file or creds_file")
        return self

    def described_servers(self) -> str:
        return ", ".join(mask_url(server) for server in self.servers)


def mask_url(url: str) -> str:
    """``nats://user:secret@host`` -> ``nats://user:***@host`` (any userinfo masked)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at < 0:
        return url
    userinfo, host = rest[:at], rest[at + 1 :]
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}{sep}{shown}@{host}"


class NatsConnection:
    """One nats-py client for a unit: options built (and files checked) once, at
    build time; ``connect`` never gives up, so a unit waits for its servers."""

    def __init__(self, config: NatsConnectionConfig, unit: str) -> None:
        self.config = config
        self.unit = unit
        for key in ("nkey_seed_file", "creds_file"):
            path = getattr(config, key)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{unit}: {key} {str(path)!r} is not a readable file")
        if config.creds_file is not None:
            check_creds_file(Path(config.creds_file), unit)
        self._tls = config.tls.context(unit) if config.tls is not None else None
        self.client: NatsClient | None = None
        self.connected_once = False
        self._last_error_log = 0.0
        self.disconnects = 0
        self._closing = False

    def options(self) -> dict[str, Any]:
        config = self.config
        options: dict[str, Any] = {
            "servers": list(config.servers),
            "name": config.name or f"logstream-{self.unit}",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": config.reconnect_wait_secs,
            "connect_timeout": config.connect_timeout_secs,
            "ping_interval": 5,
            "max_outstanding_pings": 2,
            "error_cb": self._error,
            "disconnected_cb": self._disconnected,
            "reconnected_cb": self._reconnected,
        }
        if config.user is not None:
            options["user"] = config.user
            options["password"] = config.password
        if config.token is not None:
            options["token"] = config.token
        if config.nkey_seed_file is not None:
            options["nkeys_seed"] = str(config.nkey_seed_file)
        if config.creds_file is not None:
            options["user_credentials"] = str(config.creds_file)
        if self._tls is not None:
            options["tls"] = self._tls
            if config.tls is not None and config.tls.server_name:
                options["tls_hostname"] = config.tls.server_name
        return options

    async def connect(self) -> NatsClient:
        """Connect (waiting as long as it takes; the client retries every server)."""
        self._closing = False
        client = await nats.connect(**self.options())
        self.client = client
        self.connected_once = True
        log.info("%s: connected to NATS %s", self.unit, _where(client))
        return client

    async def check(self, timeout_secs: float = 5.0) -> str:
        """Log in once (no retry) and ask JetStream for the account; what was found.
        Raises ``ConnectionError`` saying why not (credentials masked)."""
        options = {
            **self.options(),
            "allow_reconnect": False,
            "max_reconnect_attempts": 0,
            "error_cb": _ignore_error,
            "disconnected_cb": None,
            "reconnected_cb": None,
        }
        try:
            client = await asyncio.wait_for(nats.connect(**options), timeout_secs)
        except (nats.errors.Error, OSError, TimeoutError) as error:
            raise ConnectionError(f"cannot log in: {describe(error)}") from None
        try:
            version = client.connected_server_version
            try:
                account = await client.jetstream().account_info()
                jetstream = f"JetStream: {account.streams} streams"
            except (nats.errors.Error, OSError) as error:
                jetstream = f"JetStream unavailable: {describe(error)}"
            return f"{_where(client)}: OK, nats-server {version}, {jetstream}"
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    async def close(self) -> None:
        self._closing = True
        client, self.client = self.client, None
        if client is not None and not client.is_closed:
            try:
                await client.close()
            except Exception as error:
                log.warning("%s: closing the NATS connection: %s", self.unit, describe(error))

    async def _error(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= 5.0:  # one line per 5 s while a server is down
            self._last_error_log = now
            log.warning("%s: NATS: %s", self.unit, describe(error))

    async def _disconnected(self) -> None:
        if self._closing:
            return
        self.disconnects += 1
        log.warning("%s: disconnected from NATS; reconnecting", self.unit)

    async def _reconnected(self) -> None:
        client = self.client
        where = _where(client) if client is not None else "?"
        log.info("%s: reconnected to NATS %s", self.unit, where)


def check_creds_file(path: Path, unit: str) -> None:
    """``ValueError`` unless ``path`` is a .creds file: the line after ``BEGIN NATS
    USER JWT`` a JWT, the line after ``BEGIN USER NKEY SEED`` a user seed.

    nats-py reads exactly those lines (and loops forever on a file without the
    JWT marker), so a wrong file is refused here, at build time, named by its
    path: its content is never shown.
    """
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise ValueError(
            f"{unit}: creds_file {str(path)!r} cannot be read: {error.strerror}"
        ) from None

    def after(marker: str) -> str:
        for index, line in enumerate(lines[:-1]):
            if marker in line:
                return lines[index + 1].strip()
        return ""

    jwt, seed = after("BEGIN NATS USER JWT"), after("BEGIN USER NKEY SEED")
    if jwt.count(".") != 2 or not jwt.startswith("eyJ"):
        problem = "no user JWT after its '-----BEGIN NATS USER JWT-----' line"
    elif not seed.startswith("SU"):
        problem = "no user nkey seed (SU...) after its '-----BEGIN USER NKEY SEED-----' line"
    else:
        return
    raise ValueError(f"{unit}: creds_file {str(path)!r} is not a NATS .creds file: {problem}")


async def _ignore_error(error: Exception) -> None:
    """A one-off login (``check``) reports its error itself."""


def describe(error: BaseException) -> str:
    """An error as ``Type: text`` with any URL's credentials masked."""
    text = str(error) or repr(error)
    words = [mask_url(word) if "@" in word and "://" in word else word for word in text.split()]
    return f"{type(error).__name__}: {' '.join(words)}"


def _where(client: NatsClient) -> str:
    url = client.connected_url
    return mask_url(url.geturl()) if url is not None else "?"
