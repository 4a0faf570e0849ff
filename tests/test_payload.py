"""MQTT payload format version 1: every encoding round-trips; bad input gets a clear error."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import lz4.frame
import orjson
import pytest
import zstandard

from logstream.metrics import UnitMetrics
from logstream.payload import (
    ENCODERS,
    LZ4_MAGIC,
    ZSTD_MAGIC,
    BatchEncoder,
    PayloadError,
    decode,
    detect_encoding,
    format_sample_rates,
    rate_json,
    with_sample_rate,
)

ENCODINGS = ["json", "ndjson", "lz4", "zstd"]


def events(count: int) -> list[dict[str, Any]]:
    return [
        {
            "@timestamp": f"2026-11-24T10:00:{n % 60:02d}.000Z",
            "host": f"web-{n % 3}",
            "level": "INFO",
            "message": f"GET /api/v1/items/{n} 200 {n * 7 % 1000} ms",
            "n": n,
        }
        for n in range(count)
    ]


def encode_all(encoding: str, batch: list[dict[str, Any]], **settings: Any) -> list[bytes]:
    encoder = ENCODERS[encoding](UnitMetrics("mqtt", "sink"), **settings)
    return [payload for payload, _ in encoder.encode(batch)]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_encoding_decodes_back_to_the_same_events_in_order(encoding: str) -> None:
    batch = events(500)
    decoded = [e for payload in encode_all(encoding, batch) for e in decode(payload).events]
    assert decoded == batch


@pytest.mark.parametrize(
    ("encoding", "magic"), [("lz4", LZ4_MAGIC), ("zstd", ZSTD_MAGIC), ("ndjson", b"{")]
)
def test_payloads_start_with_the_bytes_that_tell_mqtt311_subscribers_the_encoding(
    encoding: str, magic: bytes
) -> None:
    (payload,) = encode_all(encoding, events(10))
    assert payload.startswith(magic)
    assert detect_encoding(payload) == encoding


def test_lz4_payloads_are_standard_frames_any_lz4_library_reads() -> None:
    (payload,) = encode_all("lz4", events(100))
    lines = lz4.frame.decompress(payload).splitlines()
    assert [orjson.loads(line) for line in lines] == events(100)


def test_zstd_payloads_are_standard_frames_any_zstd_library_reads() -> None:
    (payload,) = encode_all("zstd", events(100))
    data = zstandard.ZstdDecompressor().decompress(payload)
    assert [orjson.loads(line) for line in data.splitlines()] == events(100)


@pytest.mark.skipif(shutil.which("lz4") is None, reason="the lz4 command is not installed")
def test_the_lz4_command_decodes_a_payload() -> None:
    (payload,) = encode_all("lz4", events(50))
    out = subprocess.run(["lz4", "-dc"], input=payload, capture_output=True, check=True).stdout
    assert [orjson.loads(line) for line in out.splitlines()] == events(50)


@pytest.mark.parametrize("encoding", ["ndjson", "lz4", "zstd"])
def test_batches_split_at_max_events_and_stay_under_max_payload_bytes(encoding: str) -> None:
    batch = events(3000)
    payloads = encode_all(encoding, batch, max_payload_bytes=4096, max_events=400)
    assert all(len(payload) <= 4096 for payload in payloads)
    assert all(len(decode(payload).events) <= 400 for payload in payloads)
    assert [e for payload in payloads for e in decode(payload).events] == batch


def test_an_event_bigger_than_max_payload_bytes_goes_alone() -> None:
    batch = [{"message": "x" * 10_000}, {"message": "small"}]
    encoder = BatchEncoder(UnitMetrics("mqtt", "sink"), "ndjson", max_payload_bytes=1024)
    assert [count for _, count in encoder.encode(batch)] == [1, 1]


def test_unserialisable_events_are_left_out_and_counted() -> None:
    metrics = UnitMetrics("mqtt", "sink")
    encoder = BatchEncoder(metrics, "lz4")
    ((payload, count),) = encoder.encode([{"n": 1}, {"bad": {1, 2}}, {"n": 3}])
    assert count == 2
    assert decode(payload).events == [{"n": 1}, {"n": 3}]
    assert metrics.dropped == {"encode_error": 1}


def test_mqtt5_properties_are_checked_and_give_sample_rates_and_record_kind() -> None:
    (payload,) = encode_all("lz4", events(3))
    decoded = decode(
        payload,
        content_type="application/x-ndjson+lz4",
        properties={
            "logstream": "1",
            "encoding": "lz4",
            "events": "3",
            "sample_rates": "INFO=10,DEBUG=2.5",
        },
    )
    assert decoded.version == 1
    assert decoded.sample_rates == {"INFO": 10.0, "DEBUG": 2.5}
    assert decoded.record == "events"
    assert decoded.errors == []


def test_sample_rate_is_spliced_into_the_json_line_and_multiplied_when_present() -> None:
    event = {"message": "hi"}
    line = with_sample_rate(orjson.dumps(event), event, rate_json(10), 10)
    assert orjson.loads(line) == {"message": "hi", "sample_rate": 10}
    assert orjson.loads(with_sample_rate(b"{}", {}, rate_json(2.5), 2.5)) == {"sample_rate": 2.5}
    sampled = {"message": "hi", "sample_rate": 10}
    line = with_sample_rate(orjson.dumps(sampled), sampled, rate_json(4), 4)
    assert orjson.loads(line) == {"message": "hi", "sample_rate": 40}


def test_sample_rates_property_format() -> None:
    assert format_sample_rates({"INFO": 10.0, "DEBUG": 1 / 0.037}) == "INFO=10,DEBUG=27.03"


def test_a_pretty_printed_json_object_from_another_publisher_is_one_event() -> None:
    assert decode(b'{\n  "a": {\n    "b": 1\n  }\n}\n').events == [{"a": {"b": 1}}]


# --------------------------------------------------------------------------- bad input


def lz4_payload() -> bytes:
    (payload,) = encode_all("lz4", events(200))
    return payload


@pytest.mark.parametrize(
    ("payload", "properties", "message"),
    [
        (b"", None, "empty payload"),
        (b"\x00\x01garbage", None, "starts with 00 01 67 61"),
        (b"GET / HTTP/1.1\r\n", None, "expected the LZ4 frame magic 04 22 4d 18"),
        (lz4_payload()[:-9], None, "truncated LZ4 frame"),
        (lz4_payload()[:11], None, "truncated LZ4 frame"),
        (LZ4_MAGIC + b"\xff" * 20, None, "corrupt LZ4 frame"),
        (lz4_payload() + b"extra", None, "bytes after the LZ4 frame"),
        (ZSTD_MAGIC + b"\x00" * 3, None, "zstd frame"),
        (b'{"a": 1}', {"logstream": "3"}, "format version 3 is not supported"),
        (b'{"a": 1}', {"logstream": "x"}, "format version 'x' is not a number"),
        (b'{"a": 1}', {"encoding": "brotli"}, "unknown encoding 'brotli'"),
        (b'{"a": 1}', {"encoding": "lz4"}, "says encoding 'lz4' but the payload is json"),
        (b"{not json\n{also not\n", None, "no event in the ndjson payload: line 1"),
        (b"[1, 2]", None, "not a logstream payload: it starts with 5b"),
        (b'{"a": [1, 2', None, "no event in the ndjson payload: line 1: not valid JSON"),
    ],
)
def test_bad_payloads_raise_a_payload_error_saying_what_is_wrong(
    payload: bytes, properties: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(PayloadError, match=message.replace("(", r"\(")):
        decode(payload, properties=properties)


def test_a_corrupted_lz4_block_fails_the_content_checksum() -> None:
    payload = bytearray(lz4_payload())
    payload[len(payload) // 2] ^= 0xFF
    with pytest.raises(PayloadError, match="LZ4"):
        decode(bytes(payload))


def test_a_decompression_bomb_is_refused() -> None:
    bomb = lz4.frame.compress(b"{}\n" * 1_000_000)
    with pytest.raises(PayloadError, match="more than 1000 bytes"):
        decode(bomb, max_decoded_bytes=1000)


def test_bad_lines_are_reported_and_the_good_ones_kept() -> None:
    payload = lz4.frame.compress(b'{"n": 1}\nnot json\n[3]\n{"n": 4}\n')
    decoded = decode(payload)
    assert decoded.events == [{"n": 1}, {"n": 4}]
    assert len(decoded.errors) == 2
    assert decoded.errors[0].startswith("line 2: not valid JSON")
    assert decoded.errors[1] == "line 3: a list, not an object"


def test_an_event_count_that_does_not_match_the_property_is_reported() -> None:
    decoded = decode(b'{"n": 1}\n{"n": 2}\n', properties={"events": "3"})
    assert decoded.errors == ["the events property says 3 but the payload holds 2"]


@pytest.mark.parametrize("cut", range(0, 40, 3))
def test_any_truncation_of_any_encoding_is_an_error_or_a_prefix_never_a_crash(cut: int) -> None:
    batch = events(5)
    for encoding in ENCODINGS:
        payload = encode_all(encoding, batch)[0]
        try:
            decoded = decode(payload[: max(0, len(payload) - 1 - cut)])
        except PayloadError:
            continue
        assert decoded.events == batch[: len(decoded.events)]
