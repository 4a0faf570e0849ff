"""The /tail page's payload decoder (logstream/web/src/decode.js) under Node.js, against
payloads made by logstream's own encoders: every encoding decodes to the same events as
the Python decoder, accounting records are recognised, and every truncation and
corruption of a real payload is a PayloadError, quickly (never a hang or another error)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from logstream.metrics import UnitMetrics
from logstream.payload import ENCODERS, decode

REPO = Path(__file__).resolve().parent.parent
ESBUILD = REPO / "node_modules" / ".bin" / "esbuild"

RUNNER = """
import { decodePayload, PayloadError, isAccounting, suppressedCount } from "./decode.mjs";
import { readFileSync } from "node:fs";
const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const results = cases.map(([name, b64]) => {
  const bytes = new Uint8Array(Buffer.from(b64, "base64"));
  const started = Date.now();
  try {
    const decoded = decodePayload(bytes);
    return {name, ms: Date.now() - started, encoding: decoded.encoding, events: decoded.events,
            errors: decoded.errors.length,
            suppressed: decoded.events.filter(isAccounting).map(suppressedCount)};
  } catch (error) {
    return {name, ms: Date.now() - started,
            error: error instanceof PayloadError ? "PayloadError" : String(error)};
  }
});
console.log(JSON.stringify(results));
"""


@pytest.fixture(scope="module")
def node_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert shutil.which("node"), "Node.js is missing: run scripts/bootstrap"
    assert ESBUILD.exists(), "node_modules is missing: run scripts/bootstrap (npm ci)"
    work = tmp_path_factory.mktemp("decode-js")
    subprocess.run(
        [str(ESBUILD), str(REPO / "logstream/web/src/decode.js"), "--bundle", "--format=esm",
         "--platform=node", f"--outfile={work / 'decode.mjs'}", "--log-level=warning"],
        check=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    (work / "run.mjs").write_text(RUNNER)
    return work


def run_node(work: Path, cases: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    path = work / "cases.json"
    path.write_text(json.dumps([[name, base64.b64encode(data).decode()] for name, data in cases]))
    done = subprocess.run(
        ["node", str(work / "run.mjs"), str(path)],
        capture_output=True, text=True, timeout=120, cwd=work, check=True,
    )  # fmt: skip
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


EVENTS = [
    {"message": f"event {n} ünïcødé", "level": "INFO", "host": "h", "n": n, "nested": {"a": [n]}}
    for n in range(50)
]
ACCOUNTING = {
    "type": "logstream.accounting", "level": "NOTICE", "message": "mqtt: 12 events suppressed",
    "logstream": {"format": 1, "suppressed": {"INFO": 10, "DEBUG": 2}},
}  # fmt: skip


def payloads() -> list[tuple[str, bytes]]:
    made = []
    for encoding in ("json", "ndjson", "lz4", "zstd"):
        encoder = ENCODERS[encoding](UnitMetrics("test", "sink"))
        for i, (payload, _) in enumerate(encoder.encode([*EVENTS, ACCOUNTING])):
            made.append((f"{encoding}-{i}", payload))
    return made


def test_every_encoding_decodes_as_in_python(node_decoder: Path) -> None:
    cases = payloads()
    results = run_node(node_decoder, cases)
    for (name, payload), result in zip(cases, results, strict=True):
        assert "error" not in result, (name, result)
        assert result["events"] == decode(payload).events, name
        assert result["encoding"] == name.split("-")[0]
    suppressed = [n for result in results for n in result["suppressed"]]
    assert suppressed == [12, 12, 12, 12]  # one accounting record per encoding


def test_every_truncation_and_corruption_is_a_payload_error(node_decoder: Path) -> None:
    cases: list[tuple[str, bytes]] = []
    for name, payload in payloads():
        if name.startswith(("lz4", "zstd")):
            cases += [(f"{name} cut {n}", payload[:n]) for n in range(len(payload))]
            for at in range(4, len(payload), max(1, len(payload) // 40)):
                flipped = bytearray(payload)
                flipped[at] ^= 0xFF
                cases.append((f"{name} flip {at}", bytes(flipped)))
    cases += [("empty", b""), ("garbage", b"\x00\x01binary"), ("text", b"not a payload")]
    results = run_node(node_decoder, cases)
    for (name, _), result in zip(cases, results, strict=True):
        assert result["ms"] < 1000, (name, result["ms"])
        if " cut " in name or name in ("empty", "garbage", "text"):
            assert result.get("error") == "PayloadError", (name, result)
        else:  # a flipped byte: an error, or lines that are still JSON (bad ones counted)
            assert result.get("error") in (None, "PayloadError"), (name, result)
