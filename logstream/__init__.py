"""logstream: a log-stream processor for production logs.

Logstash-compatible inputs, a batched filtering pipeline, and fan-out to
Elasticsearch and bandwidth-capped MQTT. See README.md.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("logstream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
