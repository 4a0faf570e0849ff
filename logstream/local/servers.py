"""The local servers a config asks for (``url: local``, ``hosts: [local]``,
``servers: [local]``), started by ``logstream run`` and stopped when it ends."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

log = logging.getLogger("logstream")

# Where the local broker's URL is written (in the state directory) for `logstream tail`.
MQTT_URL_FILE = "mqtt.url"


class LocalServer(Protocol):
    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...


@contextlib.contextmanager
def local_servers(needs: set[str], state_dir: Path) -> Iterator[dict[str, str]]:
    """Start the local servers a config asks for; yield their URLs; stop them after."""
    started: list[LocalServer] = []
    urls: dict[str, str] = {}
    try:
        if "mqtt" in needs:
            from logstream.local.mosquitto import Mosquitto

            broker = Mosquitto(
                state_dir / "mosquitto", websockets=True, url_file=state_dir / MQTT_URL_FILE
            )
            broker.start()
            started.append(broker)
            urls["mqtt"] = broker.url
            urls["mqtt_websockets"] = broker.websockets_url
            log.info("started local mosquitto at %s", broker.url)
        if "elasticsearch" in needs:
            from logstream.local.noida import Noida

            noida = Noida(state_dir / "noida-db")
            noida.start()
            started.append(noida)
            urls["elasticsearch"] = noida.url
            log.info("started local noida-db (Elasticsearch API) at %s", noida.url)
        if "nats" in needs:
            from logstream.local.nats import LocalNats

            nats_server = LocalNats(state_dir / "nats")
            nats_server.start()
            started.append(nats_server)
            urls["nats"] = nats_server.url
            log.info("local JetStream nats-server at %s", nats_server.url)
        yield urls
    finally:
        for server in reversed(started):
            try:
                server.stop()
            except Exception:
                log.exception("stopping a local server failed")
