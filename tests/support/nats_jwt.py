"""Decentralised NATS auth for the tests: an operator, accounts and users as signed JWTs.

::

    operator = Operator.new()
    account = operator.account("app", jetstream=True)
    creds = account.user("shipper").write_creds(tmp_path / "shipper.creds")
    NatsServer(..., extra_config=operator.server_config(tmp_path, [account]))

The JWTs are signed here with the ``nkeys`` package (a nats-py dependency) the
way ``nsc`` signs them: header ``{"typ":"JWT","alg":"ed25519-nkey"}``,
base64url without padding, an ed25519 signature by the issuer's nkey over
``header.payload``. The server takes the operator JWT, a system account and
the accounts preloaded into a MEMORY resolver.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

__all__ = ["Account", "Operator", "User", "creds_text"]

_UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
# Any non-zero storage limit enables JetStream for the account (-1: unlimited).
_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class _Keys:
    seed: str
    public: str

    @classmethod
    def new(cls, prefix: int) -> _Keys:
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        public = nkeys.from_seed(bytearray(seed)).public_key.decode()
        return cls(seed.decode(), public)

    def sign(self, subject: str, name: str, nats: dict[str, Any]) -> str:
        """A JWT issued by these keys about ``subject``."""
        header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
        claims = {
            "jti": _b64(os.urandom(24)),
            "iat": int(time.time()),
            "iss": self.public,
            "name": name,
            "sub": subject,
            "nats": {**nats, "version": 2},
        }
        payload = _b64(json.dumps(claims).encode())
        signature = nkeys.from_seed(bytearray(self.seed.encode())).sign(
            f"{header}.{payload}".encode()
        )
        return f"{header}.{payload}.{_b64(signature)}"


@dataclass(frozen=True)
class User:
    name: str
    seed: str
    public: str
    jwt: str

    def write_creds(self, path: Path) -> Path:
        path.write_text(creds_text(self.jwt, self.seed), encoding="utf-8")
        path.chmod(0o600)
        return path


@dataclass(frozen=True)
class Account:
    keys: _Keys
    jwt: str

    @property
    def public(self) -> str:
        return self.keys.public

    def user(self, name: str) -> User:
        """A user of this account (signed by the account's key), allowed everything."""
        user = _Keys.new(nkeys.PREFIX_BYTE_USER)
        nats = {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
        return User(name, user.seed, user.public, self.keys.sign(user.public, name, nats))


@dataclass(frozen=True)
class Operator:
    keys: _Keys
    system: Account

    @classmethod
    def new(cls) -> Operator:
        keys = _Keys.new(nkeys.PREFIX_BYTE_OPERATOR)
        system = _account(keys, "SYS", jetstream=False)
        return cls(keys, system)

    def account(self, name: str, *, jetstream: bool = True) -> Account:
        return _account(self.keys, name, jetstream=jetstream)

    def jwt(self) -> str:
        nats = {"type": "operator", "system_account": self.system.public}
        return self.keys.sign(self.keys.public, "logstream-tests", nats)

    def server_config(self, directory: Path, accounts: Sequence[Account]) -> list[str]:
        """nats-server config lines: this operator, its system account, ``accounts``."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "operator.jwt"
        path.write_text(self.jwt(), encoding="utf-8")
        preload = ", ".join(
            f"{account.public}: {account.jwt}" for account in (self.system, *accounts)
        )
        return [
            f'operator: "{path}"',
            f"system_account: {self.system.public}",
            "resolver: MEMORY",
            f"resolver_preload: {{ {preload} }}",
        ]


def _account(operator: _Keys, name: str, *, jetstream: bool) -> Account:
    keys = _Keys.new(nkeys.PREFIX_BYTE_ACCOUNT)
    limits = {**_UNLIMITED, **(_JETSTREAM if jetstream else {})}
    return Account(keys, operator.sign(keys.public, name, {"type": "account", "limits": limits}))


def creds_text(jwt: str, seed: str) -> str:
    """A .creds file as ``nsc`` writes it."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n"
        "\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n"
        "\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n"
        "\n"
        "*************************************************************\n"
    )
