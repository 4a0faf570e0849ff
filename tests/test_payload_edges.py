"""MQTT payload decoding and framing at their edges: declared against detected
encodings, exact error messages, limits, MQTT 5 properties, the halving of payloads
over max_bytes and the compression estimate. Written against the survivors of
``scripts/mutate payload``."""

from __future__ import annotations

import lz4.frame
import orjson
import pytest
import zstandard

from logstream.metrics import UnitMetrics
from logstream.payload import (
    BatchEncoder,
    CompressionEstimate,
    PayloadError,
    decode,
    detect_encoding,
    frame_within,
    framer,
    join_lines,
    with_sample_rate,
)


def lines(count: int, size: int = 40) -> list[bytes]:
    return [orjson.dumps({"n": n, "pad": "x" * size}) for n in range(count)]


NDJSON = b'{"a": 1}\n{"a": 2}\n'
ONE = b'{"a": 1}'


# --------------------------------------------------------------------------- decode


def test_detect_encoding_by_the_first_bytes() -> None:
    assert detect_encoding(lz4.frame.compress(b"x")) == "lz4"
    assert detect_encoding(zstandard.ZstdCompressor().compress(b"x")) == "zstd"
    assert detect_encoding(b'  {"a": 1}\n') == "json"
    assert detect_encoding(b'{"a": 1}\r\n{"a": 2}') == "ndjson"
    assert detect_encoding(NDJSON) == "ndjson"
    with pytest.raises(PayloadError, match=r"^empty payload$"):
        detect_encoding(b"")
    with pytest.raises(PayloadError, match=r"it starts with 5b 31 5d; expected the LZ4"):
        detect_encoding(b"[1]")


def test_declared_encoding_wins_over_json_and_ndjson_but_must_match_otherwise() -> None:
    # One object declared ndjson is read as NDJSON; NDJSON declared json still decodes.
    assert decode(ONE, properties={"encoding": "ndjson"}).encoding == "ndjson"
    decoded = decode(NDJSON, properties={"encoding": "json"})
    assert decoded.encoding == "ndjson" and [e["a"] for e in decoded.events] == [1, 2]
    with pytest.raises(PayloadError, match=r"says encoding 'lz4' but the payload is json"):
        decode(ONE, properties={"encoding": "lz4"})
    with pytest.raises(PayloadError, match=r"unknown encoding 'gzip'; this decoder reads json"):
        decode(ONE, properties={"encoding": "gzip"})


def test_content_type_declares_the_encoding_case_and_parameters_ignored() -> None:
    data = lz4.frame.compress(NDJSON)
    assert decode(data, content_type="Application/X-NDJSON+LZ4; charset=utf-8").encoding == "lz4"
    assert decode(ONE, content_type="application/x-ndjson").encoding == "ndjson"
    assert decode(ONE, content_type="text/plain").encoding == "json"  # unknown: detected
    assert decode(ONE, content_type="").encoding == "json"
    with pytest.raises(PayloadError, match="says encoding 'zstd'"):
        decode(ONE, content_type="application/x-ndjson+zstd")
    # The encoding property is asked before the content type.
    assert (
        decode(ONE, content_type="application/json", properties={"encoding": "ndjson"}).encoding
        == "ndjson"
    )


def test_format_version_property() -> None:
    assert decode(ONE).version is None
    assert decode(ONE, properties={"logstream": "1"}).version == 1
    with pytest.raises(PayloadError, match=r"^format version 'one' is not a number$"):
        decode(ONE, properties={"logstream": "one"})
    with pytest.raises(PayloadError, match=r"^format version 3 is not supported"):
        decode(ONE, properties={"logstream": "3"})


def test_size_limits_apply_to_what_a_payload_decodes_to() -> None:
    assert len(decode(ONE, max_decoded_bytes=len(ONE)).events) == 1
    with pytest.raises(
        PayloadError, match=rf"^payload of {len(ONE)} bytes is over {len(ONE) - 1}$"
    ):
        decode(ONE, max_decoded_bytes=len(ONE) - 1)
    for compress, name in (
        (lz4.frame.compress, "LZ4"),
        (zstandard.ZstdCompressor().compress, "zstd"),
    ):
        data = compress(NDJSON)
        assert len(decode(data, max_decoded_bytes=len(NDJSON)).events) == 2
        with pytest.raises(PayloadError, match=rf"^{name} frame decodes to more than 17 bytes$"):
            decode(data, max_decoded_bytes=len(NDJSON) - 1)


def test_truncated_corrupt_and_trailing_frames_are_named() -> None:
    lz4_data = lz4.frame.compress(NDJSON)
    with pytest.raises(PayloadError, match=rf"^truncated LZ4 frame: {len(lz4_data) - 4} bytes"):
        decode(lz4_data[:-4])
    with pytest.raises(PayloadError, match=r"^5 bytes after the LZ4 frame; one frame per payload$"):
        decode(lz4_data + b"extra")
    with pytest.raises(PayloadError, match=r"^corrupt LZ4 frame: "):
        decode(lz4_data[:4] + b"\xff" * 12)
    zstd_data = zstandard.ZstdCompressor().compress(NDJSON)
    with pytest.raises(PayloadError, match=rf"^truncated zstd frame: {len(zstd_data) - 3} bytes"):
        decode(zstd_data[:-3])
    with pytest.raises(PayloadError, match=r"^corrupt zstd frame: "):
        decode(zstd_data[:4] + b"\x08" + zstd_data[5:])  # a reserved header bit set


def test_bad_lines_are_reported_by_number_and_the_rest_kept() -> None:
    decoded = decode(b'{"a": 1}\n[2]\n\n{nope\n{"a": 3}\n')
    assert [e["a"] for e in decoded.events] == [1, 3]
    assert decoded.errors[0] == "line 2: a list, not an object"
    assert decoded.errors[1].startswith("line 4: not valid JSON: ")
    assert len(decoded.errors) == 2
    with pytest.raises(
        PayloadError,
        match=r"^no event in the ndjson payload: line 1: not valid JSON: .*; line 2: a int, not",
    ):
        decode(b"{\n1\n")
    # lz4 and zstd payloads are always read line by line, even when one object.
    assert decode(lz4.frame.compress(ONE)).events == [{"a": 1}]


def test_a_top_level_array_is_refused() -> None:
    data = b'{"a": 1}'
    assert decode(data).encoding == "json"
    with pytest.raises(PayloadError, match="not a logstream payload"):
        decode(b'[{"a": 1}]')


def test_record_kind_from_the_property_or_from_the_events() -> None:
    record = orjson.dumps({"type": "logstream.accounting", "logstream": {}})
    assert decode(record).record == "accounting"
    assert decode(record + b"\n" + ONE + b"\n").record == "events"
    assert decode(ONE, properties={"record": "accounting"}).record == "accounting"
    assert decode(record, properties={"record": "events"}).record == "events"


def test_sample_rates_and_events_properties() -> None:
    decoded = decode(ONE, properties={"sample_rates": "INFO=10, DEBUG =2.5", "events": "1"})
    assert decoded.sample_rates == {"INFO": 10.0, "DEBUG": 2.5}
    assert decoded.errors == []
    decoded = decode(ONE, properties={"sample_rates": "INFO=ten,WARNING=1"})
    assert decoded.sample_rates == {"WARNING": 1.0}
    assert decoded.errors == ["sample_rates property: bad entry 'INFO=ten'"]
    assert decode(ONE, properties={"sample_rates": ""}).sample_rates == {}
    decoded = decode(NDJSON, properties={"events": "3"})
    assert decoded.errors == ["the events property says 3 but the payload holds 2"]


# --------------------------------------------------------------------------- framing


def test_frame_within_keeps_one_payload_when_it_fits_exactly() -> None:
    ndjson = framer("ndjson")
    batch = lines(4)
    size = len(join_lines(batch))
    assert frame_within(ndjson, batch, size, CompressionEstimate()) == [(join_lines(batch), 4)]
    halves = frame_within(ndjson, batch, size - 1, CompressionEstimate())
    assert halves == [(join_lines(batch[:2]), 2), (join_lines(batch[2:]), 2)]
    assert frame_within(ndjson, [], 10, CompressionEstimate()) == []


def test_frame_within_halves_until_it_fits_and_lets_one_big_line_through() -> None:
    ndjson = framer("ndjson")
    batch = lines(5)
    one = len(join_lines(batch[:1]))
    out = frame_within(ndjson, batch, one, CompressionEstimate())
    assert [count for _, count in out] == [1, 1, 1, 1, 1]
    assert b"".join(data for data, _ in out) == join_lines(batch)
    big = frame_within(ndjson, batch[:1], 5, CompressionEstimate())
    assert big == [(join_lines(batch[:1]), 1)]  # a single line over the limit still goes


def test_frame_within_sends_json_one_event_per_message() -> None:
    batch = lines(3)
    assert frame_within(framer("json"), batch, 1, CompressionEstimate()) == [
        (line, 1) for line in batch
    ]


def test_the_compression_estimate_learns_three_tenths_of_each_gap() -> None:
    estimate = CompressionEstimate()
    assert estimate.value == 1.0
    assert estimate.raw_limit(1000) == 900
    estimate.learn(1000, 200)
    assert estimate.value == pytest.approx(1.0 + 0.3 * (0.2 - 1.0))
    assert estimate.raw_limit(1000) == int(1000 * 0.9 / estimate.value)
    estimate.learn(0, 50)  # nothing raw: nothing learnt
    assert estimate.value == pytest.approx(0.76)
    estimate.value = 0.001  # never divides by less than 0.01
    assert estimate.raw_limit(1000) == 90_000
    assert CompressionEstimate().raw_limit(1) == 1  # at least one byte


def test_frame_within_teaches_the_estimate_what_the_framer_achieved() -> None:
    estimate = CompressionEstimate()
    batch = [orjson.dumps({"n": n, "pad": "y" * 500}) for n in range(20)]
    raw = join_lines(batch)
    out = frame_within(framer("lz4"), batch, 10**9, estimate)
    assert len(out) == 1
    assert estimate.value == pytest.approx(1.0 + 0.3 * (len(out[0][0]) / len(raw) - 1.0))


# --------------------------------------------------------------------------- framers, encoders


def test_framer_levels_defaults_bounds_and_errors() -> None:
    assert framer("lz4").level == 0  # type: ignore[attr-defined]
    assert framer("zstd").level == 3  # type: ignore[attr-defined]
    assert framer("lz4", 16).level == 16  # type: ignore[attr-defined]
    for level in (1, 19):
        assert framer("zstd", level).level == level  # type: ignore[attr-defined]
    for level in (0, 20):
        with pytest.raises(
            ValueError, match=rf"^zstd compression_level must be 1 to 19, value: {level}$"
        ):
            framer("zstd", level)
    with pytest.raises(ValueError, match=r"^lz4 compression_level must be 0 to 16, value: 17$"):
        framer("lz4", 17)
    with pytest.raises(
        ValueError, match=r"^encoding must be one of json, ndjson, lz4, zstd, value: 'gz'$"
    ):
        framer("gz")
    # The level reaches the compressor; zstd frames say their content size.
    data = join_lines(lines(200))
    assert framer("zstd", 19).frame(data) != framer("zstd", 1).frame(data)
    params = zstandard.get_frame_parameters(framer("zstd").frame(data))
    assert params.content_size == len(data)


def test_batch_encoder_cuts_by_event_count_and_by_raw_size() -> None:
    metrics = UnitMetrics("t", "sink")
    batch = [{"n": n} for n in range(7)]
    by_count = BatchEncoder(metrics, "ndjson", max_events=3).encode(batch)
    assert [count for _, count in by_count] == [3, 3, 1]
    assert b"".join(data for data, _ in by_count) == join_lines([orjson.dumps(e) for e in batch])
    exact = BatchEncoder(metrics, "ndjson", max_events=7).encode(batch)
    assert [count for _, count in exact] == [7]
    # Raw size: each line is 7 bytes + newline; a 40-byte cap gives raw_limit 36 (0.9 * 40):
    # a payload closes when its raw bytes reach 36, i.e. after 5 lines (40 bytes).
    assert len(orjson.dumps({"n": 0})) + 1 == 8
    by_size = BatchEncoder(metrics, "ndjson", max_payload_bytes=40).encode(batch)
    assert [count for _, count in by_size] == [5, 2]
    # 37 bytes: raw_limit 33 closes after 5 lines too, but 40 framed bytes are over
    # the cap, so that payload is halved (2 + 3).
    halved = BatchEncoder(metrics, "ndjson", max_payload_bytes=37).encode(batch)
    assert [count for _, count in halved] == [2, 3, 2]
    assert BatchEncoder(metrics, "ndjson").encode([]) == []
    assert BatchEncoder(metrics).framer.encoding == "lz4"
    assert BatchEncoder(metrics, "zstd", level=7).framer.level == 7  # type: ignore[attr-defined]


def test_with_sample_rate_splices_or_multiplies_an_existing_rate() -> None:
    event = {"a": 1}
    assert with_sample_rate(orjson.dumps(event), event, b"4", 4.0) == b'{"a":1,"sample_rate":4}'
    assert with_sample_rate(b"{}", {}, b"2.5", 2.5) == b'{"sample_rate":2.5}'
    sampled = {"a": 1, "sample_rate": 3}
    out = with_sample_rate(orjson.dumps(sampled), sampled, b"2", 2.0)
    assert orjson.loads(out or b"") == {"a": 1, "sample_rate": 6}
    for odd in (0, -2, True, "10"):  # not a usable rate: replaced by this one
        event = {"a": 1, "sample_rate": odd}
        out = with_sample_rate(orjson.dumps(event), event, b"2", 2.0)
        assert orjson.loads(out or b"")["sample_rate"] == 2, odd
    fractional = {"sample_rate": 0.5}
    out = with_sample_rate(orjson.dumps(fractional), fractional, b"3", 3.0)
    assert orjson.loads(out or b"")["sample_rate"] == 1.5
