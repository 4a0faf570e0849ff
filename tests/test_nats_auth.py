"""NATS logins against a real nats-server: an nkey user, a token, a user and password,
and a .creds file (decentralised JWT auth: an operator, an account with JetStream, a user).

Each method logs in (the shipper publishes, the indexer reads), a wrong
credential is refused and said so, and no credential (password, token, nkey
seed) is ever printed: not by ``logstream check --connect``, not by the
banner and logs of ``logstream run``, not in the errors of a refused login.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nkeys
import pytest
import yaml

from logstream.config import ConfigError, build_pipeline, parse_config
from logstream.local.nats import NatsServer, find_nats_server
from logstream.units import BuildContext
from tests.support.inputs import Runner, eventually, numbered
from tests.support.nats_jwt import Operator

run = Runner("uvloop")

TOKEN = "t0ken-Sh0uld-N3ver-Sh0w"  # noqa: S105 - the test server's token
PASSWORD = "pa55-Sh0uld-N3ver-Sh0w"  # noqa: S105 - the test server's password


def _seed_file(path: Path) -> tuple[Path, str, str]:
    """A new nkey user: its seed file, the seed and the public key."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    path.write_bytes(seed + b"\n")
    path.chmod(0o600)
    return path, seed.decode(), public


Login = tuple[list[str], dict[str, Any], dict[str, Any], list[str]]


def _login(method: str, tmp_path: Path) -> Login:
    """Server config lines, good and wrong credentials, and the secrets never to print."""
    if method == "nkey":
        good, seed, public = _seed_file(tmp_path / "user.nk")
        wrong, other, _ = _seed_file(tmp_path / "stranger.nk")
        return (
            [f"authorization {{ users = [ {{ nkey: {public} }} ] }}"],
            {"nkey_seed_file": str(good)},
            {"nkey_seed_file": str(wrong)},
            [seed, other, seed[2:20]],
        )
    if method == "creds":
        operator = Operator.new()
        account = operator.account("logs", jetstream=True)
        user = account.user("shipper")
        good = user.write_creds(tmp_path / "shipper.creds")
        # A user of an account the server does not know (another operator's).
        stranger = Operator.new().account("logs").user("stranger")
        wrong = stranger.write_creds(tmp_path / "stranger.creds")
        return (
            operator.server_config(tmp_path / "operator", [account]),
            {"creds_file": str(good)},
            {"creds_file": str(wrong)},
            [user.seed, stranger.seed, user.seed[2:20], user.jwt, stranger.jwt],
        )
    if method == "token":
        return (
            [f'authorization {{ token: "{TOKEN}" }}'],
            {"token": TOKEN},
            {"token": f"wrong-{TOKEN}"},
            [TOKEN],
        )
    return (
        [f'authorization {{ user: shipper, password: "{PASSWORD}" }}'],
        {"user": "shipper", "password": PASSWORD},
        {"user": "shipper", "password": f"wrong-{PASSWORD}"},
        [PASSWORD],
    )


def _config(url: str, out: Path, credentials: dict[str, Any]) -> dict[str, Any]:
    nats = {"servers": [url], "stream": "LOGS", **credentials}
    return {
        "monitor": {"enabled": False},
        "inputs": [
            {"type": "tcp", "listen": "127.0.0.1:0"},
        ],
        "sinks": [
            {"type": "nats", "subject": "logs.{host}", "max_message_events": 100, **nats},
        ],
    }


def _indexer(url: str, out: Path, credentials: dict[str, Any]) -> dict[str, Any]:
    return {
        "monitor": {"enabled": False},
        "inputs": [
            {"type": "nats", "servers": [url], "stream": "LOGS", **credentials},
        ],
        "sinks": [{"type": "file", "path": str(out)}],
    }


def _logstream(*args: str, until: str | None = None) -> str:
    """Run ``logstream ARGS``; with ``until``, stop it (SIGINT) once a line holds that."""
    process = subprocess.Popen(
        [sys.executable, "-m", "logstream", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    if until is not None:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        for line in process.stdout:
            lines.append(line)
            if until in line.lower() or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGINT)
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return "".join(lines) + out


@pytest.mark.integration
@pytest.mark.parametrize("method", ["nkey", "token", "password", "creds"])
def test_each_login_works_a_wrong_one_is_refused_and_no_credential_is_printed(
    method: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        find_nats_server()
    except Exception as error:
        pytest.skip(str(error))
    server_lines, good, wrong, secrets = _login(method, tmp_path)
    out = tmp_path / "indexed.ndjson"
    with NatsServer(tmp_path / "server", extra_config=server_lines) as server:

        async def main() -> None:
            shipper = build_pipeline(
                parse_config(_config(server.url, out, good)),
                BuildContext(state_dir=tmp_path / "s"),
            )
            indexer = build_pipeline(
                parse_config(_indexer(server.url, out, good)),
                BuildContext(state_dir=tmp_path / "i"),
            )
            refused = build_pipeline(
                parse_config(_indexer(server.url, tmp_path / "never.ndjson", wrong)),
                BuildContext(state_dir=tmp_path / "r"),
            )
            await shipper.start()
            await indexer.start()
            await refused.start()
            sink = shipper.sinks[0].sink
            await sink.write(numbered(5))
            assert sink.metrics.events_out == 5  # the shipper logged in and JetStream acked
            await eventually(lambda: out.exists() and len(out.read_bytes().splitlines()) == 5, 10)
            await asyncio.sleep(1.0)  # the wrong login keeps being refused
            never = tmp_path / "never.ndjson"
            assert not never.exists() or never.read_bytes() == b""
            await refused.stop()
            await indexer.stop()
            await shipper.stop()

        with caplog.at_level(logging.DEBUG):
            run(main(), 40)
        assert "authorization" in caplog.text.lower()

        good_file = tmp_path / "good.yaml"
        good_file.write_text(yaml.safe_dump(_config(server.url, out, good)))
        wrong_file = tmp_path / "wrong.yaml"
        wrong_file.write_text(yaml.safe_dump(_indexer(server.url, out, wrong)))
        checked = _logstream("check", "--connect", "-c", str(good_file))
        assert f"127.0.0.1:{server.port}: OK, nats-server" in checked, checked
        bad_file = tmp_path / "bad.yaml"
        bad_file.write_text(yaml.safe_dump(_config(server.url, out, wrong)))
        refused_check = _logstream("check", "--connect", "-c", str(bad_file))
        assert "FAILED: cannot log in" in refused_check, refused_check
        assert "authorization" in refused_check.lower(), refused_check
        running = _logstream("run", "-c", str(wrong_file), until="authorization")
        assert "authorization" in running.lower(), running
    for text in (caplog.text, checked, refused_check, running):
        for secret in secrets:
            assert secret not in text


@pytest.mark.integration
@pytest.mark.parametrize("case", ["absent", "not creds", "jwt only"])
def test_a_creds_file_that_cannot_be_used_is_refused_by_path_without_its_content(
    case: str, tmp_path: Path
) -> None:
    """Refused when the config is built (``logstream check`` says which file and why),
    before any connection: nats-py would loop forever on a file without the JWT."""
    user = Operator.new().account("logs").user("shipper")
    creds = tmp_path / "shipper.creds"
    if case == "not creds":
        creds.write_text(f"{user.seed}\n")  # an nkey seed file given as creds_file
    elif case == "jwt only":
        text = user.write_creds(creds).read_text()
        creds.write_text(text.split("-----BEGIN USER NKEY SEED-----")[0])
    config = _config("nats://127.0.0.1:1", tmp_path / "out.ndjson", {"creds_file": str(creds)})
    indexer = _indexer("nats://127.0.0.1:1", tmp_path / "out.ndjson", {"creds_file": str(creds)})
    for document in (config, indexer):
        with pytest.raises(ConfigError, match="creds_file") as refused:
            build_pipeline(parse_config(document), BuildContext(state_dir=tmp_path / "s"))
        assert str(creds) in str(refused.value)
    expected = {
        "absent": "is not a readable file",
        "not creds": "no user JWT after",
        "jwt only": "no user nkey seed",
    }[case]
    assert expected in str(refused.value)
    config_file = tmp_path / "shipper.yaml"
    config_file.write_text(yaml.safe_dump(config))
    checked = _logstream("check", "-c", str(config_file))
    assert expected in checked and str(creds) in checked, checked
    for secret in (user.seed, user.seed[2:20], user.jwt):
        assert secret not in checked
