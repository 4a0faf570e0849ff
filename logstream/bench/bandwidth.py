"""`logstream bench bandwidth`: what each MQTT payload policy costs a broker, and what
subscribers lose.

For every policy, a fresh mosquitto (``sys_interval 1``, no queue limits) on
a free port, a subscriber recording every message and the broker's
``$SYS/broker/bytes/received`` and ``$SYS/broker/messages/received``, and the
real pipeline built from a config dict (tcp input, ``parse`` filter, ``mqtt``
sink with the policy's settings). The records are replayed over TCP at
``rate`` events/s (or as fast as possible), each stamped with its send time
in ``bench_sent``. The broker's counters over the run are the referee; the
subscriber decodes every payload with :func:`logstream.payload.decode` and
counts events per severity, sample rates, accounting records and latency.

The baseline is what logstash-output-mqtt sent: one uncompressed JSON event
per MQTT 3.1.1 message.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logstream.bench.corpus import encode_records, load_records
from logstream.bench.probe import PING_WIRE_BYTES, Probe, SysSample
from logstream.event import Batch
from logstream.payload import SAMPLE_RATE_FIELD, PayloadError, decode, is_accounting
from logstream.severity import NAMES
from logstream.sinks.mqtt import wire_size

TOPIC = "logs/{host}/{level}"
SENT_FIELD = "bench_sent"
DEFAULT_RATE = 10_000.0
DEFAULT_EVENTS = 100_000
# About 1/50 of the baseline's bytes at the default rate on the corpus (~530 B/event).
DEFAULT_CAP_BYTES_PER_SEC = 100_000.0
DEFAULT_POLICIES = ("baseline", "ndjson", "lz4", "zstd", "lz4-sampled", "lz4-capped")
IMPORTANT = ("WARNING", "ERROR", "CRITICAL")
# The broker config the bench needs (the launcher's defaults already say so;
# given again so the bench does not depend on them).
BROKER_CONFIG = ("sys_interval 1", "max_queued_messages 0", "max_queued_bytes 0")
_SEND_TICK_SECS = 0.01


@dataclass(frozen=True)
class Policy:
    """One way of publishing: the mqtt sink settings beyond ``url`` and ``topic``."""

    name: str
    description: str
    sink: dict[str, Any]

    @property
    def cap_bytes_per_sec(self) -> float | None:
        limit = self.sink.get("rate_limit") or {}
        value = limit.get("total_bytes_per_sec")
        return None if value is None else float(value)


def policies(cap_bytes_per_sec: float) -> dict[str, Policy]:
    """Every known policy by name; the capped ones use ``cap_bytes_per_sec`` in total."""
    cap = {"total_bytes_per_sec": cap_bytes_per_sec}
    return {
        policy.name: policy
        for policy in (
            Policy(
                "baseline",
                "one JSON event per MQTT 3.1.1 message (logstash-output-mqtt)",
                {"encoding": "json", "protocol": "3.1.1"},
            ),
            Policy("json", "one JSON event per MQTT 5 message", {"encoding": "json"}),
            Policy("ndjson", "NDJSON batches per topic, uncompressed", {"encoding": "ndjson"}),
            Policy("lz4", "NDJSON batches per topic in LZ4 frames", {"encoding": "lz4"}),
            Policy(
                "lz4-9",
                "lz4 batches, compression_level 9 (HC)",
                {"encoding": "lz4", "compression_level": 9},
            ),
            Policy("zstd", "NDJSON batches per topic in zstd frames", {"encoding": "zstd"}),
            Policy(
                "lz4-sampled",
                f"lz4 + the sink's adaptive sampler under a {cap_bytes_per_sec:g} B/s cap",
                {"encoding": "lz4", "rate_limit": {**cap, "adaptive": True}},
            ),
            Policy(
                "zstd-sampled",
                f"zstd + the sink's adaptive sampler under a {cap_bytes_per_sec:g} B/s cap",
                {"encoding": "zstd", "rate_limit": {**cap, "adaptive": True}},
            ),
            Policy(
                "lz4-capped",
                f"lz4 under a {cap_bytes_per_sec:g} B/s cap, no sampling (whole payloads dropped)",
                {"encoding": "lz4", "rate_limit": {**cap, "adaptive": False}},
            ),
        )
    }


@dataclass
class Options:
    policies: list[str] = field(default_factory=lambda: list(DEFAULT_POLICIES))
    corpus: Path | None = None  # None: generated records
    events: int | None = DEFAULT_EVENTS  # None: the corpus once (20 000 generated)
    rate: float | None = DEFAULT_RATE  # events/s; None: as fast as possible
    cap_bytes_per_sec: float = DEFAULT_CAP_BYTES_PER_SEC
    out: Path = Path("bench-results")
    progress: bool = True


# --------------------------------------------------------------------------- one policy


@dataclass
class Measured:
    """What one policy's run left behind, before analysis."""

    policy: Policy
    sent: int
    send_secs: float
    sink: dict[str, Any]  # the mqtt sink's counters
    pipeline: dict[str, Any]  # tcp input and parse filter counters
    offered: Counter[str]  # events offered to the sink, per level
    start: SysSample
    end: SysSample
    sys_samples: list[SysSample]
    probe: Probe
    started_at: float


def _level(event: dict[str, Any]) -> str:
    value = event.get("level")
    return value if isinstance(value, str) and value else "_"


async def _send(
    port: int,
    lines: list[bytes],
    rate: float | None,
    advance: Callable[[int], None],
) -> float:
    """Send ``lines`` over one TCP connection at ``rate`` lines/s (None: at once), each
    prefixed with its send time. Returns the seconds it took."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    sent = 0
    total = len(lines)
    try:
        while sent < total:
            if rate is None:
                due = min(total, sent + 1000)
            else:
                elapsed = time.perf_counter() - started
                due = min(total, int(elapsed * rate) + 1)
                if due <= sent:
                    await asyncio.sleep(_SEND_TICK_SECS)
                    continue
            stamp = b'{"' + SENT_FIELD.encode() + b'":' + repr(time.time()).encode() + b","
            writer.write(b"".join(stamp + line + b"\n" for line in lines[sent:due]))
            await writer.drain()
            advance(due - sent)
            sent = due
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return time.perf_counter() - started


async def _run_pipeline(
    policy: Policy,
    broker_url: str,
    lines: list[bytes],
    rate: float | None,
    workdir: Path,
    probe: Probe,
    advance: Callable[[int], None],
) -> Measured:
    from logstream.config import build_pipeline, parse_config
    from logstream.local.mosquitto import free_port
    from logstream.units import BuildContext

    port = free_port()
    data = {
        "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{port}"}],
        "filters": [{"type": "parse"}],
        "sinks": [
            {
                "type": "mqtt",
                "id": "mqtt",
                "url": broker_url,
                "topic": TOPIC,
                # Losses are the policy's own (sampled, rate_limited), not a full buffer's.
                "when_full": "block",
                "close_timeout_secs": 30,
                **policy.sink,
            }
        ],
        "pipeline": {"shutdown_timeout_secs": 60},
        "monitor": {"enabled": False},
        "state_dir": str(workdir / "state"),
    }
    config = parse_config(data, env={})
    pipeline = build_pipeline(config, BuildContext(state_dir=config.state_dir))
    runner = pipeline.sinks[0]
    offered: Counter[str] = Counter()
    offer = runner.offer

    async def counting_offer(batch: Batch) -> None:
        offered.update(_level(event) for event in batch)
        await offer(batch)

    runner.offer = counting_offer  # the bench's own instrument: counts per level
    await pipeline.start()
    stopped = False
    try:
        # The sink's CONNECT is in the broker's totals once the next $SYS update came.
        start = await asyncio.to_thread(probe.wait_sys_after, time.time(), 5.0)
        if start is None:
            raise TimeoutError("no $SYS update from the broker before the run")
        started_at = time.time()
        send_secs = await _send(port, lines, rate, advance)
        tcp = pipeline.registry["tcp"]
        deadline = time.monotonic() + 60
        while tcp.events_in < len(lines) and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a plain counter
            await asyncio.sleep(0.02)
        report = await pipeline.stop(60)
        stopped = True
        if not report.clean:
            raise RuntimeError(f"the pipeline did not flush: {report.unflushed}")
    finally:
        if not stopped:
            await pipeline.stop(5)
    await asyncio.to_thread(probe.wait_quiet, 0.5, 30.0)
    end = await asyncio.to_thread(probe.wait_sys_after, time.time(), 5.0)
    if end is None:
        raise TimeoutError("no $SYS update from the broker after the run")
    sink = pipeline.registry["mqtt"].snapshot()
    parse = pipeline.registry["parse"].snapshot()
    samples = [s for s in probe.sys_samples if start.at <= s.at <= end.at]
    return Measured(
        policy=policy,
        sent=len(lines),
        send_secs=send_secs,
        sink=sink,
        pipeline={"tcp": tcp.snapshot(), "parse": parse},
        offered=offered,
        start=start,
        end=end,
        sys_samples=samples,
        probe=probe,
        started_at=started_at,
    )


def run_policy(
    policy: Policy,
    lines: list[bytes],
    rate: float | None,
    workdir: Path,
    advance: Callable[[int], None],
) -> Measured:
    """One policy against its own fresh broker."""
    from logstream.local.mosquitto import Mosquitto
    from logstream.loop import run_loop

    with Mosquitto(workdir / "mosquitto", extra_config=BROKER_CONFIG) as broker:
        probe = Probe(broker.host, broker.port)
        probe.start()
        try:
            measured: Measured = run_loop(
                _run_pipeline(policy, broker.url, lines, rate, workdir, probe, advance)
            )
        finally:
            probe.stop()
    return measured


# --------------------------------------------------------------------------- analysis


def percentile(values: list[float], share: float) -> float | None:
    """The ``share`` (0..1) percentile by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def analyse(measured: Measured) -> dict[str, Any]:
    """The per-policy result (plain JSON data)."""
    policy = measured.policy
    delivered: Counter[str] = Counter()
    estimated: dict[str, float] = {}
    acc_sampled: Counter[str] = Counter()
    acc_rate_limited: Counter[str] = Counter()
    latencies: list[float] = []
    records = decode_errors = payload_bytes = wire_bytes = 0
    mqtt5 = policy.sink.get("protocol", "5") == "5"
    seconds: dict[int, int] = {}
    for message in measured.probe.messages:
        payload_bytes += len(message.payload)
        # The PUBLISH packet as the sink sent it (the broker forwards the same properties).
        wire = wire_size(
            len(message.topic.encode()),
            len(message.payload),
            0,
            message.properties_bytes if mqtt5 else None,
        )
        wire_bytes += wire
        second = int(message.at - measured.started_at)
        seconds[second] = seconds.get(second, 0) + wire
        try:
            decoded = decode(
                message.payload, content_type=message.content_type, properties=message.properties
            )
        except PayloadError:
            decode_errors += 1
            continue
        decode_errors += len(decoded.errors)
        for event in decoded.events:
            if is_accounting(event):
                records += 1
                info = event.get("logstream") or {}
                acc_sampled.update(info.get("sampled") or {})
                acc_rate_limited.update(info.get("rate_limited") or {})
                continue
            level = _level(event)
            delivered[level] += 1
            rate = event.get(SAMPLE_RATE_FIELD, 1)
            estimated[level] = estimated.get(level, 0.0) + (
                rate if isinstance(rate, int | float) else 1
            )
            sent_at = event.get(SENT_FIELD)
            if isinstance(sent_at, int | float):
                latencies.append(message.at - sent_at)

    sink = measured.sink
    dropped: dict[str, int] = dict(sink["dropped"])
    events_in = int(sink["events_in"])
    delivered_total = sum(delivered.values())
    other_drops = {k: v for k, v in dropped.items() if k not in ("sampled", "rate_limited") and v}
    accounted = (
        delivered_total
        + sum(other_drops.values())
        + sum(acc_sampled.values())
        + sum(acc_rate_limited.values())
    )
    balance = {
        "events_in": events_in,
        "delivered": delivered_total,
        "dropped_other": other_drops,
        "sampled_in_records": sum(acc_sampled.values()),
        "rate_limited_in_records": sum(acc_rate_limited.values()),
        "sampled_in_metrics": dropped.get("sampled", 0),
        "rate_limited_in_metrics": dropped.get("rate_limited", 0),
        "events_out_in_metrics": int(sink["events_out"]),
        "estimated_from_sample_rates": round(
            sum(estimated.values()) + sum(acc_rate_limited.values()), 1
        ),
        # events in = delivered + dropped with a reason + suppressed as the records say,
        # and the records agree with the sink's own counters.
        "balanced": accounted == events_in
        and sum(acc_sampled.values()) == dropped.get("sampled", 0)
        and sum(acc_rate_limited.values()) == dropped.get("rate_limited", 0)
        and delivered_total == int(sink["events_out"]),
    }

    # The probe's one ping after the run is in the end totals: take it out.
    broker_bytes = measured.end.bytes_received - measured.start.bytes_received - PING_WIRE_BYTES
    broker_messages = measured.end.messages_received - measured.start.messages_received - 1
    broker_intervals = _per_interval(measured.sys_samples, measured.started_at)
    last = max(seconds) if seconds else -1
    per_second = [(second, float(seconds.get(second, 0))) for second in range(last + 1)]
    rates_only = [rate for _, rate in per_second]
    cap = policy.cap_bytes_per_sec
    levels = [name for name in NAMES if measured.offered.get(name)] + sorted(
        name for name in measured.offered if name not in NAMES
    )
    kept_share = {name: delivered.get(name, 0) / measured.offered[name] for name in levels}
    important_offered = sum(measured.offered.get(name, 0) for name in IMPORTANT)
    important_kept = sum(delivered.get(name, 0) for name in IMPORTANT)
    max_bps = max(rates_only) if rates_only else None
    p99_bps = percentile(rates_only, 0.99)
    return {
        "policy": policy.name,
        "description": policy.description,
        "sink": policy.sink,
        "cap_bytes_per_sec": cap,
        "events_sent": measured.sent,
        "send_secs": round(measured.send_secs, 3),
        "events_in": events_in,
        "events_delivered": delivered_total,
        "accounting_records": records,
        "decode_errors": decode_errors,
        "broker_bytes": broker_bytes,
        "broker_messages": broker_messages,
        "bytes_per_event": broker_bytes / events_in if events_in else None,
        "subscriber_messages": len(measured.probe.messages),
        "subscriber_payload_bytes": payload_bytes,
        "offered_per_level": {name: measured.offered[name] for name in levels},
        "delivered_per_level": {name: delivered.get(name, 0) for name in levels},
        "sample_rate_sum_per_level": {name: round(estimated.get(name, 0.0), 1) for name in levels},
        "kept_share_per_level": kept_share,
        "important_kept_share": important_kept / important_offered if important_offered else None,
        "accounting": balance,
        "suppressed_per_level": {
            "sampled": {name: acc_sampled[name] for name in levels if acc_sampled.get(name)},
            "rate_limited": {
                name: acc_rate_limited[name] for name in levels if acc_rate_limited.get(name)
            },
        },
        "dropped": dropped,
        "merged_by_parse": int(measured.pipeline["parse"]["dropped"].get("merged", 0)),
        "subscriber_wire_bytes": wire_bytes,
        # Wire bytes of the messages that arrived in each whole second of the run.
        "per_second": [[t, r] for t, r in per_second],
        # Broker bytes/s between consecutive $SYS updates (mosquitto: about every 2 s).
        "broker_intervals": [[round(t, 3), round(r, 1)] for t, r in broker_intervals],
        "max_bytes_per_sec": max_bps,
        "p99_bytes_per_sec": p99_bps,
        "max_over_cap": max_bps / cap if cap and max_bps is not None else None,
        "p99_over_cap": p99_bps / cap if cap and p99_bps is not None else None,
        "latency_p50_ms": _ms(percentile(latencies, 0.50)),
        "latency_p99_ms": _ms(percentile(latencies, 0.99)),
    }


def _ms(secs: float | None) -> float | None:
    return None if secs is None else round(secs * 1000, 1)


def _per_interval(samples: list[SysSample], started_at: float) -> list[tuple[float, float]]:
    """Broker bytes/s between consecutive ``$SYS`` updates (each 1-2 s apart),
    as (seconds since the run started, bytes/s)."""
    out = []
    for before, after in itertools.pairwise(samples):
        secs = after.at - before.at
        if secs > 0.2:
            rate = (after.bytes_received - before.bytes_received) / secs
            out.append((after.at - started_at, rate))
    return out


# --------------------------------------------------------------------------- the command


def run(options: Options) -> dict[str, Any]:
    """Run every policy and write results.json, results.md and the plots into ``options.out``."""
    import tempfile

    from logstream.bench import plots
    from logstream.bench.report import progress_bar, write_json

    known = policies(options.cap_bytes_per_sec)
    unknown = [name for name in options.policies if name not in known]
    if unknown:
        raise ValueError(f"unknown policy {', '.join(unknown)}; known: {', '.join(known)}")
    names = list(dict.fromkeys(["baseline", *options.policies]))  # baseline always, first
    records, source = load_records(options.corpus, options.events)
    lines = encode_records(records)
    options.out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="logstream-bench-") as tmp,
        progress_bar(len(lines) * len(names), "events", options.progress) as bar,
    ):
        for name in names:
            bar.set_postfix_str(name)
            measured = run_policy(known[name], lines, options.rate, Path(tmp) / name, bar.update)
            results.append(analyse(measured))
    base = results[0]["bytes_per_event"]
    for result in results:
        per_event = result["bytes_per_event"]
        result["times_fewer_than_baseline"] = base / per_event if base and per_event else None
        result["ratio_to_baseline"] = per_event / base if base and per_event else None
    summary = {
        "command": "logstream bench bandwidth",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": source,
        "records": len(lines),
        "rate_events_per_sec": options.rate,
        "cap_bytes_per_sec": options.cap_bytes_per_sec,
        "topic": TOPIC,
        "policies": results,
    }
    write_json(options.out / "results.json", summary)
    plotted = plots.bandwidth_plots(summary, options.out)
    summary["plots"] = [str(path) for path in plotted]
    (options.out / "results.md").write_text(markdown(summary, plotted), encoding="utf-8")
    return summary


def _fmt(value: float | None, spec: str = ",.0f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def markdown(summary: dict[str, Any], plotted: list[Path]) -> str:
    """The results as markdown tables, with how the run was made."""
    results = summary["policies"]
    rate = summary["rate_events_per_sec"]
    lines = [
        "# logstream bench bandwidth",
        "",
        f"{summary['records']:,} records from {summary['source']}, replayed at "
        + (f"{rate:,.0f} events/s" if rate else "full speed")
        + f" through tcp → parse → mqtt (topic `{summary['topic']}`), a fresh mosquitto per "
        f"policy; broker bytes/messages are mosquitto's own `$SYS/broker/bytes/received` and "
        "`messages/received` over the run; per-second figures are the wire bytes of the PUBLISH "
        "packets that reached the subscriber in each second of the run. "
        f"Caps: {summary['cap_bytes_per_sec']:,.0f} B/s in total. {summary['when']}.",
        "",
        "| policy | events in | delivered | broker msgs | broker bytes | B/event | x fewer "
        "than baseline | WARNING+ kept | max B/s (÷ cap) | p99 B/s (÷ cap) | latency p50 / p99 ms "
        "| accounting |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        cap = r["cap_bytes_per_sec"]
        important = r["important_kept_share"]
        acc = r["accounting"]
        lines.append(
            f"| {r['policy']} | {r['events_in']:,} | {r['events_delivered']:,} "
            f"| {r['broker_messages']:,} | {r['broker_bytes']:,} "
            f"| {_fmt(r['bytes_per_event'], '.1f')} "
            f"| {_fmt(r['times_fewer_than_baseline'], '.1f')}x "
            f"| {_fmt(None if important is None else important * 100, '.1f')} % "
            f"| {_fmt(r['max_bytes_per_sec'])}"
            + (f" ({r['max_over_cap']:.3f})" if cap else "")
            + f" | {_fmt(r['p99_bytes_per_sec'])}"
            + (f" ({r['p99_over_cap']:.3f})" if cap else "")
            + f" | {_fmt(r['latency_p50_ms'], '.0f')} / {_fmt(r['latency_p99_ms'], '.0f')} "
            f"| {'balanced' if acc['balanced'] else 'UNBALANCED'} |"
        )
    levels: list[str] = []
    for r in results:
        levels += [name for name in r["offered_per_level"] if name not in levels]
    lines += [
        "",
        "Share of each severity kept (delivered ÷ offered to the sink):",
        "",
        "| policy | " + " | ".join(levels) + " |",
        "|---|" + "---:|" * len(levels),
    ]
    for r in results:
        shares = r["kept_share_per_level"]
        cells = ["-" if name not in shares else f"{shares[name] * 100:.1f} %" for name in levels]
        lines.append(f"| {r['policy']} | " + " | ".join(cells) + " |")
    offered = results[0]["offered_per_level"]
    lines += [
        "",
        "Events offered per severity: "
        + ", ".join(f"{name} {count:,}" for name, count in offered.items())
        + f" ({results[0]['merged_by_parse']:,} continuation lines folded by parse).",
        "",
        "Accounting (events in = delivered + dropped with a reason + suppressed as reported "
        "in the accounting records):",
        "",
        "| policy | events in | delivered | sampled (records / metrics) "
        "| rate_limited (records / metrics) | other drops | WARNING+ sampled / rate_limited "
        "| Σ sample_rate + rate_limited |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        acc = r["accounting"]
        other = ", ".join(f"{k} {v:,}" for k, v in acc["dropped_other"].items()) or "none"
        lines.append(
            f"| {r['policy']} | {acc['events_in']:,} | {acc['delivered']:,} "
            f"| {acc['sampled_in_records']:,} / {acc['sampled_in_metrics']:,} "
            f"| {acc['rate_limited_in_records']:,} / {acc['rate_limited_in_metrics']:,} "
            f"| {other} | {_sum_important(r, 'sampled'):,} / {_sum_important(r, 'rate_limited'):,} "
            f"| {acc['estimated_from_sample_rates']:,.0f} |"
        )
    lines += [
        "",
        "The last column is the scale-up the payload spec gives subscribers (sum of "
        "`sample_rate` over received events plus `rate_limited` from the records); it "
        "matches *events in* only while every severity keeps a non-zero share.",
    ]
    lines += ["", "Plots: " + ", ".join(f"[{p.name}]({p.name})" for p in plotted), ""]
    return "\n".join(lines)


def _sum_important(result: dict[str, Any], reason: str) -> int:
    counts = result["suppressed_per_level"][reason]
    return int(sum(counts.get(name, 0) for name in IMPORTANT))


def default_out_dir(kind: str) -> Path:
    """``bench-results/<kind>-<UTC timestamp>``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path("bench-results") / f"{kind}-{stamp}"
