"""The ``mqtt`` sink: events published to an MQTT broker on topics made from event fields.

::

    sinks:
      - type: mqtt
        url: "mqtts://broker.example:8883"      # user:password@ allowed, or username/password
        username: "${MQTT_USERNAME}"
        password: "${MQTT_PASSWORD}"
        topic: "logs/{host}/{level}"            # each {field} is sanitised, "_" when missing
        qos: 0
        encoding: lz4                           # json (default) | ndjson | lz4 | zstd
        rate_limit:
          topic_bytes_per_sec: 50000            # wire bytes after compression, per topic
          total_bytes_per_sec: 200000           # the whole sink

How a batch travels::

    write(batch) -> group events by topic -> per topic:
        [sampler: keep ratios per severity, only with rate_limit]
        -> JSON lines -> payload batcher (max bytes / events / delay; a timer
           task seals partial payloads) -> framed (ndjson, lz4, zstd) or one
           message per event (json)
        -> ready queue -> token buckets (topic, total) -> paho publish()
        -> on_publish -> events_out

Payloads follow the versioned format in ``docs/mqtt-payload.md``
(:mod:`logstream.payload`): MQTT 5 messages carry a content type and user
properties; MQTT 3.1.1 subscribers tell encodings apart by the first bytes.

Bandwidth control (``rate_limit``): each topic and the whole sink may have
token buckets in wire bytes/s and messages/s (:mod:`logstream.ratelimit`),
with a capacity of ``burst_secs`` of the rate, so every 1-second window
carries at most the cap plus ``burst_secs`` of it. Before a bucket runs
dry, the sink's own sampler lowers keep ratios per severity (a
:class:`~logstream.sampling.BudgetController` per capped topic and one for
the total, fed with the measured *compressed wire bytes* per event of each
severity), dropping from the lowest severities first: WARNING and above
are kept while they alone fit. Payloads wait in a short queue (``queue_secs``
of the rate) for tokens, the most severe first; when it overflows the
queued payloads of the lowest severity are dropped and counted
(``rate_limited``) to make room, so the pipeline never waits on a rate
limit. Accounting records are never dropped by a cap (see ``_send_records``).
Kept events that stand for others carry ``sample_rate``; every
``accounting_interval_secs`` each topic that lost events gets an accounting
record saying how many of each severity were ``sampled`` or ``rate_limited``.

The sink never makes the pipeline wait on MQTT. paho queues QoS 0 packets in
an unbounded deque and QoS 1 messages in an unbounded dict, so the sink bounds
them itself: it tracks every message handed to paho until paho reports it
written (QoS 0) or acknowledged (QoS 1), and while ``max_outstanding_messages``
or ``max_outstanding_bytes`` is reached it drops and counts
(``broker_backpressure``). While not connected it drops and counts
(``not_connected``); paho reconnects in the background with a backoff.
``events_out`` and ``bytes_out`` count what paho reported sent (payload
bytes), not what was handed to it.

Threads: paho's network thread (``loop_start``) only appends to an inbox and
wakes the event loop with ``call_soon_threadsafe``; every counter and every
piece of sink state is touched on the event loop only (``write``, and the
sink's own timer task started in ``start`` and stopped in ``close``).

Topics are templates compiled at build time into a function of the event
(:mod:`.topics`).

The parts, each readable on its own (as Vector splits a sink into config,
request building, service and driver):

- :mod:`.config`: the settings (``MqttSinkConfig``);
- :mod:`.brokers`: broker URLs, each broker's own settings (``urls`` entries);
- :mod:`.limits`: the caps (``RateLimitConfig``) and the shared budget;
- :mod:`.topics`: topic templates and topic filters;
- :mod:`.payloads`: batching, framing, MQTT 5 properties, wire sizes;
- :mod:`.adaptive`: the samplers' keep ratios per severity;
- :mod:`.scheduler`: token buckets, ready queues, priorities, eviction,
  accounting records;
- :mod:`.connection`: the paho client and its thread boundary;
- :mod:`.fanout`: several brokers, one connection each;
- :mod:`.timer`: the timer task's wake-ups and stop;
- :mod:`.sink`: the driver (``write``, what the timer task does, ``close``).
"""

from __future__ import annotations

from logstream.payload import ENCODERS, Encoder, JsonEncoder, Message

from .brokers import Broker, BrokerConfig, Endpoint, parse_url
from .config import MqttSinkConfig
from .limits import RateLimitConfig, SharedBudgetConfig, TopicCaps
from .payloads import Payload, PayloadBuilder, payload_properties, wire_size
from .sink import MqttSink
from .topics import check_topic_filter, compile_topic, parse_topic

__all__ = [
    "ENCODERS",
    "Broker",
    "BrokerConfig",
    "Encoder",
    "Endpoint",
    "JsonEncoder",
    "Message",
    "MqttSink",
    "MqttSinkConfig",
    "Payload",
    "PayloadBuilder",
    "RateLimitConfig",
    "SharedBudgetConfig",
    "TopicCaps",
    "check_topic_filter",
    "compile_topic",
    "parse_topic",
    "parse_url",
    "payload_properties",
    "wire_size",
]
