// The /tail page: follows MQTT log topics straight from the broker's websockets
// listener (the broker fans out to browsers, not logstream), decodes every payload
// encoding, shows events as rows with filters, pause and a bounded buffer, and charts
// wire bytes/s per topic against the sink's caps, and events/s.
//
// Every text from the stream goes into the page with textContent, never as HTML.

import mqtt from "mqtt";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import {
  LEVELS,
  PayloadError,
  decodePayload,
  isAccounting,
  levelOf,
  rank,
  suppressedCount,
  topicMatches,
  wireBytes,
} from "./decode.js";

const $ = (id) => document.getElementById(id);

const state = {
  config: { sinks: [] },
  sink: null,
  client: null,
  items: [], // events and suppressed markers, oldest first, at most maxRows
  maxRows: 5000,
  dropped: 0, // rows the bounded buffer let go
  paused: false,
  whilePaused: 0,
  suppressed: 0,
  decodeErrors: 0,
  received: 0,
  pending: [], // items not yet on screen
  filter: { level: "TRACE", host: "", text: "" },
  seq: 0,
};

// ------------------------------------------------------------------- rates

const WINDOW_SECS = 60;
const MAX_TOPIC_SERIES = 6;
const rates = {
  topics: new Map(), // topic -> Map(second -> bytes)
  events: new Map(), // second -> events
  shown: [], // topics on the chart now
  plot: null,
};

function countRate(topic, bytes, events) {
  const second = Math.floor(Date.now() / 1000);
  let perTopic = rates.topics.get(topic);
  if (!perTopic) rates.topics.set(topic, (perTopic = new Map()));
  perTopic.set(second, (perTopic.get(second) || 0) + bytes);
  rates.events.set(second, (rates.events.get(second) || 0) + events);
}

// The byte cap (bytes/s) of `topic` under the selected sink's rate_limit, or null.
function capOf(topic) {
  const caps = state.sink && state.sink.caps;
  if (!caps) return null;
  for (const [filter, bytes] of caps.topics) {
    if (topicMatches(filter, topic)) return bytes;
  }
  return caps.topic_bytes_per_sec;
}

function chartColours(i) {
  return ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"][i % 7];
}

function buildPlot(topics) {
  const target = $("chart");
  target.textContent = "";
  const series = [{}];
  topics.forEach((topic, i) => {
    series.push({ label: `${topic} B/s`, stroke: chartColours(i), width: 1.5, scale: "B/s" });
  });
  const caps = [...new Set(topics.map(capOf).filter((c) => c !== null))];
  caps.forEach((cap) => {
    series.push({ label: `cap ${cap} B/s`, stroke: "#d62728", dash: [6, 4], width: 1, scale: "B/s" });
  });
  const total = state.sink && state.sink.caps && state.sink.caps.total_bytes_per_sec;
  if (total) {
    series.push({ label: "all topics B/s", stroke: "#444", width: 1, scale: "B/s" });
    series.push({ label: `total cap ${total} B/s`, stroke: "#444", dash: [2, 3], width: 1, scale: "B/s" });
  }
  series.push({ label: "events/s", stroke: "#17becf", width: 2, scale: "ev/s" });
  const opts = {
    width: Math.max(400, target.clientWidth || 900),
    height: 180,
    series,
    scales: { x: { time: true }, "B/s": { range: (u, min, max) => [0, Math.max(1, max) * 1.1] } },
    axes: [
      {},
      { scale: "B/s", label: "wire bytes/s", size: 70 },
      { scale: "ev/s", side: 1, label: "events/s", grid: { show: false } },
    ],
    legend: { live: false },
  };
  rates.plot = new uPlot(opts, chartData(topics), target);
  rates.shown = topics;
  rates.caps = caps;
  rates.total = total;
}

function chartData(topics) {
  const now = Math.floor(Date.now() / 1000) - 1; // the last complete second
  const xs = [];
  for (let s = now - WINDOW_SECS + 1; s <= now; s++) xs.push(s);
  const data = [xs];
  for (const topic of topics) {
    const perTopic = rates.topics.get(topic) || new Map();
    data.push(xs.map((s) => perTopic.get(s) || 0));
  }
  for (const cap of rates.caps || topics.map(capOf).filter((c) => c !== null)) {
    data.push(xs.map(() => cap));
  }
  if (rates.total) {
    data.push(xs.map((s) => {
      let sum = 0;
      for (const perTopic of rates.topics.values()) sum += perTopic.get(s) || 0;
      return sum;
    }));
    data.push(xs.map(() => rates.total));
  }
  data.push(xs.map((s) => rates.events.get(s) || 0));
  return data;
}

function tickChart() {
  const oldest = Math.floor(Date.now() / 1000) - WINDOW_SECS - 1;
  for (const [topic, perTopic] of rates.topics) {
    for (const s of perTopic.keys()) if (s < oldest) perTopic.delete(s);
    if (perTopic.size === 0) rates.topics.delete(topic);
  }
  for (const s of rates.events.keys()) if (s < oldest) rates.events.delete(s);
  const totals = [...rates.topics].map(([topic, perTopic]) => {
    let sum = 0;
    for (const bytes of perTopic.values()) sum += bytes;
    return [topic, sum];
  });
  totals.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const topics = totals.slice(0, MAX_TOPIC_SERIES).map(([topic]) => topic).sort();
  if (!rates.plot || topics.join("\n") !== rates.shown.join("\n")) {
    if (rates.plot) rates.plot.destroy();
    rates.caps = null;
    buildPlot(topics);
  } else {
    rates.plot.setData(chartData(topics));
  }
}

// ------------------------------------------------------------------- rows

function passes(item) {
  const { level, host, text } = state.filter;
  if (item.kind === "event") {
    if (rank(item.level) < rank(level)) return false;
    if (host && !String(item.host).toLowerCase().includes(host)) return false;
  }
  if (text && !item.search.includes(text)) return false;
  return true;
}

function cell(className, text) {
  const span = document.createElement("span");
  span.className = className;
  span.textContent = text;
  return span;
}

function renderItem(item) {
  const row = document.createElement("div");
  row.dataset.seq = String(item.seq);
  if (item.kind === "marker") {
    row.className = "row marker";
    row.append(cell("time", item.time), cell("level", "⋯"), cell("host", item.topic),
      cell("message", item.message));
  } else {
    row.className = `row level-${item.level}`;
    row.dataset.level = item.level;
    const message = cell("message", item.message);
    const rate = Number(item.event.sample_rate);
    if (rate > 1) {
      // A sampled event stands for `rate` events of its kind.
      const badge = cell("rate", ` ×${rate}`);
      badge.title = `kept by sampling: stands for ${rate} events`;
      message.append(badge);
    }
    row.append(cell("time", item.time), cell("level", item.level), cell("host", item.host),
      message);
  }
  row.addEventListener("click", () => {
    const open = row.querySelector("pre");
    if (open) {
      open.remove();
      row.classList.remove("open");
      return;
    }
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(item.event, null, 2);
    row.append(pre);
    row.classList.add("open");
  });
  item.node = row;
  return row;
}

function stickToBottom(rows) {
  return rows.scrollHeight - rows.scrollTop - rows.clientHeight < 40;
}

function flush() {
  updateCounters();
  if (state.paused || state.pending.length === 0) return;
  const rows = $("rows");
  const stick = stickToBottom(rows);
  const fragment = document.createDocumentFragment();
  for (const item of state.pending) {
    if (item.evicted || !passes(item)) continue;
    fragment.append(renderItem(item));
  }
  state.pending = [];
  rows.append(fragment);
  if (stick) rows.scrollTop = rows.scrollHeight;
  updateCounters();
}

function rerender() {
  const rows = $("rows");
  rows.textContent = "";
  state.pending = [];
  const fragment = document.createDocumentFragment();
  for (const item of state.items) {
    item.node = null;
    if (passes(item)) fragment.append(renderItem(item));
  }
  rows.append(fragment);
  rows.scrollTop = rows.scrollHeight;
  updateCounters();
}

function add(item) {
  item.seq = ++state.seq;
  state.items.push(item);
  while (state.items.length > state.maxRows) {
    const old = state.items.shift();
    old.evicted = true;
    if (old.node) old.node.remove();
    state.dropped += 1;
  }
  if (state.paused) state.whilePaused += 1;
  else state.pending.push(item);
}

function timeOf(event) {
  const ts = event["@timestamp"] || event.timestamp || "";
  const match = /T(\d\d:\d\d:\d\d(?:\.\d{1,3})?)/.exec(String(ts));
  return match ? match[1] : String(ts).slice(0, 23);
}

function eventItem(event, topic) {
  const message = typeof event.message === "string" ? event.message : JSON.stringify(event.message ?? "");
  const host = typeof event.host === "string" ? event.host
    : (event.host && (event.host.name || event.host.hostname)) || "";
  const level = levelOf(event);
  const text = JSON.stringify(event).toLowerCase();
  return { kind: "event", event, topic, level, host, message, time: timeOf(event), search: text };
}

function markerItem(event, topic) {
  const n = suppressedCount(event);
  state.suppressed += n;
  const message = `${n} suppressed — ${event.message || ""}`;
  const where = (event.logstream && event.logstream.topic) || topic;
  return { kind: "marker", event, topic: where, message, time: timeOf(event),
    search: message.toLowerCase(), suppressed: n };
}

function onMessage(topic, payload, packet) {
  const props = (packet && packet.properties) || {};
  countRate(topic, wireBytes(packet, topic, payload.length), 0);
  let decoded;
  try {
    decoded = decodePayload(payload, props.contentType, props.userProperties);
  } catch (error) {
    state.decodeErrors += 1;
    showError(error instanceof PayloadError ? `${topic}: ${error.message}` : String(error));
    return;
  }
  state.decodeErrors += decoded.errors.length;
  let events = 0;
  for (const event of decoded.events) {
    if (decoded.record === "accounting" || isAccounting(event)) {
      add(markerItem(event, topic));
    } else {
      events += 1;
      add(eventItem(event, topic));
    }
  }
  state.received += events;
  countRate(topic, 0, events);
}

// ------------------------------------------------------------------- page

function updateCounters() {
  const shown = $("rows").childElementCount;
  $("shown").textContent = String(shown);
  $("buffered").textContent = String(state.items.length);
  $("dropped").textContent = String(state.dropped);
  $("suppressed").textContent = String(state.suppressed);
  $("errors").textContent = String(state.decodeErrors);
  $("received").textContent = String(state.received);
  $("paused-count").textContent = state.paused ? `${state.whilePaused} arrived while paused` : "";
}

function showError(text) {
  $("error").textContent = text;
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = kind;
  status.dataset.state = kind;
}

function connect() {
  if (state.client) state.client.end(true);
  const url = $("broker").value.trim();
  const topicFilter = $("topic").value.trim() || "#";
  if (!url) {
    setStatus("no websockets URL: set websockets_url on the MQTT sink", "error");
    return;
  }
  const options = { protocolVersion: 5, clean: true, reconnectPeriod: 2000, connectTimeout: 5000 };
  const username = $("username").value;
  if (username) {
    options.username = username;
    options.password = $("password").value;
  }
  setStatus(`connecting to ${url}`, "connecting");
  const client = mqtt.connect(url, options);
  state.client = client;
  client.on("connect", () => {
    client.subscribe(topicFilter, { qos: 0 }, (error) => {
      if (error) setStatus(`subscribe ${topicFilter} failed: ${error.message}`, "error");
      else setStatus(`subscribed to ${topicFilter} at ${url}`, "connected");
    });
  });
  client.on("reconnect", () => setStatus(`reconnecting to ${url}`, "connecting"));
  client.on("close", () => {
    if ($("status").dataset.state === "connected") setStatus(`disconnected from ${url}`, "error");
  });
  client.on("error", (error) => setStatus(`${url}: ${error.message}`, "error"));
  client.on("message", onMessage);
}

function chooseSink(index) {
  const sink = state.config.sinks[index] || null;
  state.sink = sink;
  if (!sink) return;
  $("broker").value = sink.websockets_url || "";
  $("topic").value = sink.topic_filter || "#";
  $("username").value = sink.username || "";
  $("password-field").hidden = !sink.username;
  $("username-field").hidden = !sink.username;
  if (rates.plot) {
    rates.plot.destroy();
    rates.plot = null;
  }
}

function wire() {
  const level = $("level");
  for (const name of LEVELS) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = `${name}+`;
    level.append(option);
  }
  level.value = "TRACE";
  level.addEventListener("change", () => {
    state.filter.level = level.value;
    rerender();
  });
  $("host").addEventListener("input", (e) => {
    state.filter.host = e.target.value.trim().toLowerCase();
    rerender();
  });
  $("text").addEventListener("input", (e) => {
    state.filter.text = e.target.value.trim().toLowerCase();
    rerender();
  });
  $("pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("pause").textContent = state.paused ? "Resume" : "Pause";
    $("pause").setAttribute("aria-pressed", String(state.paused));
    if (!state.paused) {
      state.whilePaused = 0;
      rerender();
    }
    updateCounters();
  });
  $("clear").addEventListener("click", () => {
    state.items = [];
    state.pending = [];
    rerender();
  });
  $("max-rows").addEventListener("change", (e) => {
    const n = Number.parseInt(e.target.value, 10);
    if (Number.isFinite(n) && n > 0) {
      state.maxRows = n;
      while (state.items.length > n) {
        const old = state.items.shift();
        old.evicted = true;
        if (old.node) old.node.remove();
        state.dropped += 1;
      }
      updateCounters();
    }
  });
  $("connect").addEventListener("click", connect);
  $("sink").addEventListener("change", (e) => {
    chooseSink(Number(e.target.value));
    connect();
  });
}

async function main() {
  wire();
  try {
    const answer = await fetch("tail/config.json", { cache: "no-store" });
    if (!answer.ok) throw new Error(`tail/config.json: HTTP ${answer.status}`);
    state.config = await answer.json();
  } catch (error) {
    showError(String(error));
  }
  const params = new URLSearchParams(window.location.search);
  const select = $("sink");
  state.config.sinks.forEach((sink, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = `${sink.name} (${sink.encoding})`;
    select.append(option);
  });
  $("sink-field").hidden = state.config.sinks.length < 2;
  chooseSink(0);
  if (params.get("url")) $("broker").value = params.get("url");
  if (params.get("topic")) $("topic").value = params.get("topic");
  if (params.get("max_rows")) {
    $("max-rows").value = params.get("max_rows");
    state.maxRows = Number.parseInt(params.get("max_rows"), 10) || state.maxRows;
  }
  setInterval(flush, 100);
  setInterval(tickChart, 1000);
  tickChart();
  if (!state.sink || !state.sink.username) connect();
  else setStatus("enter the broker password, then Connect", "connecting");
  window.logstreamTail = state; // for the curious (and the tests): the page's state
}

main();
