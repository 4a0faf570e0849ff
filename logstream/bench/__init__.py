"""Benchmarks run on purpose (``logstream bench``), never by the test suite's default run.

- :mod:`logstream.bench.bandwidth`: what each MQTT payload policy costs a real
  mosquitto (its own ``$SYS`` byte counters are the referee) and what
  subscribers lose, per severity, against one JSON message per event.
- :mod:`logstream.bench.throughput`: events/s, MiB/s, CPU and peak RSS of
  ``logstream run`` (TCP to file, to lz4 MQTT, to Elasticsearch) next to
  references measured in the same run (the pieces), and
  :mod:`logstream.bench.scaling`: the command that runs them with workers
  1..N over several rounds and reports medians and ratios.

Both write ``results.json`` and ``results.md`` into an output directory;
read ratios, not absolute figures: the machine is shared and noisy.
"""
