// logstream MQTT payloads (format version 1, docs/mqtt-payload.md) decoded in the browser.
//
// A payload is one JSON object (json), NDJSON (ndjson), NDJSON in one LZ4 frame (lz4)
// or in one Zstandard frame (zstd). MQTT 5 messages also say so in their content type
// and user properties; 3.1.1 messages are told apart by their first bytes, as
// logstream/payload.py does. The frames are decoded by lz4js and fzstd.

import { decompress as lz4Decompress, decompressBound as lz4Bound } from "lz4js";
import { Decompress as ZstdStream } from "fzstd";

export const ACCOUNTING_TYPE = "logstream.accounting";
// Decoded size above which a payload is refused (as the Python decoder's default).
export const MAX_DECODED_BYTES = 64 * 1024 * 1024;

const LZ4_MAGIC = [0x04, 0x22, 0x4d, 0x18];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
const CONTENT_TYPES = {
  "application/json": "json",
  "application/x-ndjson": "ndjson",
  "application/x-ndjson+lz4": "lz4",
  "application/x-ndjson+zstd": "zstd",
};

export class PayloadError extends Error {}

function startsWith(bytes, magic) {
  if (bytes.length < magic.length) return false;
  return magic.every((byte, i) => bytes[i] === byte);
}

const utf8 = new TextDecoder("utf-8"); // invalid sequences become U+FFFD, never an exception

export function detectEncoding(bytes) {
  if (startsWith(bytes, LZ4_MAGIC)) return "lz4";
  if (startsWith(bytes, ZSTD_MAGIC)) return "zstd";
  const text = utf8.decode(bytes.subarray(0, Math.min(bytes.length, 65536))).trim();
  if (text.startsWith("{")) return /}\r?\n\{/.test(utf8.decode(bytes)) ? "ndjson" : "json";
  if (bytes.length === 0) throw new PayloadError("empty payload");
  const head = Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join(" ");
  throw new PayloadError(`not a logstream payload: it starts with ${head}`);
}

// lz4js trusts a frame's block sizes (a truncated frame makes it run for minutes), so
// the frame's layout is checked first: every block within the payload, an end mark.
function checkLz4Frame(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 7) throw new PayloadError("truncated lz4 frame (no header)");
  const flags = bytes[4];
  if ((flags & 0xc0) !== 0x40) throw new PayloadError("lz4 frame: unknown version");
  const blockChecksum = (flags & 0x10) !== 0;
  const contentChecksum = (flags & 0x04) !== 0;
  const maxBlock = [0, 0, 0, 0, 65536, 262144, 1048576, 4194304][(bytes[5] >> 4) & 7];
  if (!maxBlock) throw new PayloadError("lz4 frame: invalid block size");
  let index = 6 + ((flags & 0x08) !== 0 ? 8 : 0) + 1; // descriptor, content size, checksum
  for (;;) {
    if (index + 4 > bytes.length) throw new PayloadError("truncated lz4 frame");
    const size = view.getUint32(index, true) & 0x7fffffff;
    index += 4;
    if (size === 0) break; // the end mark
    if (size > maxBlock) throw new PayloadError("corrupt lz4 frame: a block over its size");
    index += size + (blockChecksum ? 4 : 0);
  }
  if (contentChecksum && index + 4 > bytes.length) throw new PayloadError("truncated lz4 frame");
}

function inflateLz4(bytes, limit) {
  checkLz4Frame(bytes);
  let bound;
  try {
    bound = lz4Bound(bytes);
  } catch (error) {
    throw new PayloadError(`corrupt lz4 frame: ${error.message}`);
  }
  if (bound > limit) throw new PayloadError(`lz4 frame decodes to more than ${limit} bytes`);
  try {
    return Uint8Array.from(lz4Decompress(bytes));
  } catch (error) {
    throw new PayloadError(`corrupt lz4 frame: ${error.message}`);
  }
}

function inflateZstd(bytes, limit) {
  const chunks = [];
  let size = 0;
  const stream = new ZstdStream((chunk) => {
    size += chunk.length;
    if (size > limit) throw new PayloadError(`zstd frame decodes to more than ${limit} bytes`);
    chunks.push(chunk);
  });
  try {
    stream.push(bytes, true);
  } catch (error) {
    if (error instanceof PayloadError) throw error;
    throw new PayloadError(`corrupt zstd frame: ${error.message}`);
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

// Decode one payload. `contentType` and `userProperties` come from MQTT 5 messages
// (undefined for 3.1.1). Returns {encoding, record, events, errors}; throws
// PayloadError when the payload as a whole cannot be read. Lines that are not JSON
// objects are reported in `errors` and the others kept.
export function decodePayload(bytes, contentType, userProperties, limit = MAX_DECODED_BYTES) {
  const props = userProperties || {};
  const version = props.logstream;
  if (version !== undefined && String(version) !== "1") {
    throw new PayloadError(`unsupported format version ${version}`);
  }
  const detected = detectEncoding(bytes);
  const declared = props.encoding || CONTENT_TYPES[contentType] || null;
  if (declared && declared !== detected && !(declared in { json: 1, ndjson: 1 } && detected in { json: 1, ndjson: 1 })) {
    throw new PayloadError(`the message says encoding ${declared} but the payload is ${detected}`);
  }
  const encoding = declared || detected;
  let raw = bytes;
  if (encoding === "lz4") raw = inflateLz4(bytes, limit);
  else if (encoding === "zstd") raw = inflateZstd(bytes, limit);
  const text = utf8.decode(raw);
  const events = [];
  const errors = [];
  const lines = encoding === "json" ? [text] : text.split("\n");
  for (const line of lines) {
    if (!line.trim()) continue;
    try {
      const value = JSON.parse(line);
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        errors.push(`not a JSON object: ${line.slice(0, 80)}`);
      } else {
        events.push(value);
      }
    } catch (error) {
      errors.push(`not JSON: ${line.slice(0, 80)}`);
    }
  }
  const record = props.record === "accounting" ? "accounting" : "events";
  return { encoding, record, events, errors };
}

export function isAccounting(event) {
  return event.type === ACCOUNTING_TYPE;
}

// How many events an accounting record says were suppressed (all severities).
export function suppressedCount(event) {
  const suppressed = (event.logstream && event.logstream.suppressed) || {};
  return Object.values(suppressed).reduce((sum, n) => sum + (Number(n) || 0), 0);
}

// ------------------------------------------------------------------- severities

export const LEVELS = ["TRACE", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL"];
const RANK = { TRACE: 5, DEBUG: 10, INFO: 20, NOTICE: 25, WARNING: 30, ERROR: 40, CRITICAL: 50 };
const ALIASES = {
  TRC: "TRACE", FINEST: "TRACE", FINER: "TRACE", VERBOSE: "DEBUG", DBG: "DEBUG", FINE: "DEBUG",
  INFORMATION: "INFO", INFORMATIONAL: "INFO", INF: "INFO", OK: "INFO", AUDIT: "NOTICE",
  WARN: "WARNING", WRN: "WARNING", ERR: "ERROR", SEVERE: "ERROR", FAIL: "ERROR",
  FAILED: "ERROR", CRIT: "CRITICAL", FATAL: "CRITICAL", ALERT: "CRITICAL", EMERG: "CRITICAL",
  EMERGENCY: "CRITICAL",
};

// The normalised severity name of an event (logstream's scale; unknown: INFO).
export function levelOf(event) {
  const value = event.level;
  if (typeof value !== "string") return "INFO";
  const upper = value.trim().toUpperCase();
  if (upper in RANK) return upper;
  return ALIASES[upper] || "INFO";
}

export function rank(level) {
  return RANK[level] || RANK.INFO;
}

// ------------------------------------------------------------------- topics

// Whether MQTT topic `topic` matches filter `filter` (+ one level, # the rest).
export function topicMatches(filter, topic) {
  const f = filter.split("/");
  const t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return i > 0 || !topic.startsWith("$");
    if (i >= t.length) return false;
    if (f[i] === "+") {
      if (i === 0 && t[0].startsWith("$")) return false;
      continue;
    }
    if (f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

// Bytes of a PUBLISH packet on the wire: fixed header (1 byte + the remaining
// length's varint) plus the remaining length mqtt-packet parsed.
export function wireBytes(packet, topic, payloadLength) {
  let remaining = packet && typeof packet.length === "number" ? packet.length : 0;
  if (!remaining) remaining = 2 + new TextEncoder().encode(topic).length + payloadLength;
  let varint = 1;
  for (let n = remaining; n >= 128; n = Math.floor(n / 128)) varint += 1;
  return 1 + varint + remaining;
}
