"""Follow every broker of an mqtt sink with several ``urls`` and print each event once.

::

    python docs/follow_brokers.py mqtt://broker-a:1883 mqtt://user:pw@broker-b:1883 'logs/#'

One paho client per broker, each on its own thread; a message is decoded with
``logstream.payload.decode`` (every encoding, MQTT 5 properties or the
envelope line) and printed only the first time its (producer, topic, seq) is
seen, with ``logstream.tail.Dedupe``: whichever broker delivers it first wins,
and when one broker dies the others go on. Events go to stdout as JSON lines,
what happens to the connections to stderr. This is what ``logstream tail --url
A --url B`` does, in a form to copy into your own subscriber
(``tests/test_mqtt_brokers.py`` runs it while one broker is SIGKILLed).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from logstream.payload import PayloadError, decode
from logstream.tail import Dedupe


def follow(urls: list[str], topic: str) -> None:
    dedupe = Dedupe()  # the last 10,000 numbers per producer and topic
    lock = threading.Lock()  # one paho thread per broker

    def say(line: str) -> None:
        with lock:  # print() writes text and newline apart: two threads would mix lines
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        properties = getattr(message, "properties", None)  # None with MQTT 3.1.1
        user_properties = dict(getattr(properties, "UserProperty", None) or [])
        try:
            decoded = decode(
                bytes(message.payload),
                content_type=getattr(properties, "ContentType", None),
                properties=user_properties,
            )
        except PayloadError as error:
            say(f"undecodable message on {message.topic}: {error}")
            return
        with lock:
            producer, seq = decoded.producer, decoded.seq
            if (
                producer is not None
                and seq is not None
                and not dedupe.admit(producer, message.topic, seq)
            ):
                return  # numbered, and another broker delivered it first
            for event in decoded.events:
                print(json.dumps(event), flush=True)

    for url in urls:
        parts = urlsplit(url)
        where = f"{parts.scheme}://{parts.hostname}:{parts.port or 1883}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        if parts.username:
            client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
        if parts.scheme == "mqtts":
            client.tls_set()

        def on_connect(client: mqtt.Client, *args: Any, where: str = where) -> None:
            client.subscribe(topic, qos=1)  # again after every reconnect
            say(f"connected to {where}")

        def on_subscribe(client: mqtt.Client, *args: Any, where: str = where) -> None:
            say(f"subscribed to {topic} on {where}")

        def on_disconnect(client: mqtt.Client, *args: Any, where: str = where) -> None:
            say(f"connection to {where} lost; reconnecting")

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        client.reconnect_delay_set(1, 10)
        client.connect_async(parts.hostname or "127.0.0.1", parts.port or 1883)
        client.loop_start()  # paho's thread; reconnects by itself
    threading.Event().wait()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} URL [URL ...] TOPIC")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it
        follow(sys.argv[1:-1], sys.argv[-1])
