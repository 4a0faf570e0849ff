"""Broker bytes per log event for each MQTT payload encoding, computed (no broker).

A thin wrapper: the code is :mod:`logstream.bench.payload_bytes`. For bytes
measured on a real mosquitto, per policy, use ``logstream bench bandwidth``.

    .venv/bin/python benchmarks/mqtt_bytes.py
    .venv/bin/python benchmarks/mqtt_bytes.py --topic 'logs/{host}' --json bytes.json
"""

from logstream.bench.payload_bytes import main

if __name__ == "__main__":
    main()
