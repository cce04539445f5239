/**
 * The Watch side of the page: the live event list, component health tiles, the events/s and
 * delivery-latency chart, and the per-turn latency waterfall built from trace.span events.
 * Every text from an event goes into the DOM as textContent.
 */

import { eventPayload, seqOf, typeMatches } from "./coda-client.js";

/** Milliseconds since the epoch of a protobuf JSON Timestamp ("2026-01-02T03:04:05.123456789Z"). */
export function timestampMs(text) {
  if (!text) return NaN;
  const match = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(text);
  if (!match) return Date.parse(text);
  const fraction = (match[2] || "").padEnd(6, "0");
  return Date.parse(match[1] + match[3]) + Number(fraction.slice(0, 3)) + Number(fraction.slice(3, 6)) / 1000;
}

function clockTime(ms) {
  if (!Number.isFinite(ms)) return "";
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`.slice(3, 12);
}

function element(name, className, text) {
  const node = document.createElement(name);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function short(value, max = 160) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function ms(value) {
  const n = Number(value || 0);
  if (n >= 1000) return `${(n / 1000).toFixed(2)} s`;
  if (n >= 100) return `${n.toFixed(0)} ms`;
  return `${n.toFixed(1)} ms`;
}

function enumName(value, prefix) {
  return String(value || "").replace(prefix, "").toLowerCase() || "unknown";
}

/** A one-line summary of an event for the list. */
export function summarize(type, event) {
  const p = eventPayload(event);
  switch (type) {
    case "llm.token":
      return JSON.stringify(p.text ?? "");
    case "llm.tool_call_requested":
    case "tool.call_started":
      return `${p.name}(${short(p.argumentsJson ?? "", 80)})`;
    case "tool.result":
      return `${p.name} → ${short(p.resultJson ?? "", 80)} · ${ms(p.durationMs)}`;
    case "tool.error":
      return `${p.name}: ${enumName(p.code, "TOOL_ERROR_CODE_")} ${p.message ?? ""}`;
    case "llm.finished":
      return `${p.provider ?? ""} ${p.finishReason ?? ""} · ${p.completionTokens ?? 0} tokens · ${ms(p.durationMs)}`;
    case "llm.request_started":
      return `${p.provider ?? ""}/${p.model ?? ""} · ${p.messages ?? 0} messages · ${p.tools ?? 0} tools`;
    case "trace.span":
      return `${p.name} · ${ms(p.durationMs)}`;
    case "component.status":
      return `${p.component}: ${enumName(p.state, "COMPONENT_STATE_")}${p.reason ? ` (${p.reason})` : ""}`;
    case "component.breaker":
      return `${p.component} ${p.target ?? ""}: ${enumName(p.state, "BREAKER_STATE_")}`;
    case "system.started":
      return `${(p.components || []).join(", ")} on ${p.address ?? ""}`;
    case "conversation.turn":
      return `${short(p.userText ?? "", 50)} → ${short(p.assistantText ?? "", 80)}`;
    case "voice.stt_partial":
    case "voice.stt_final":
      return JSON.stringify(p.text ?? "");
    case "memory.retrieved":
      return `${(p.memoryIds || []).length} recalled for ${JSON.stringify(short(p.query ?? "", 60))}`;
    case "system.error":
    case "component.error":
      return `${p.message ?? ""}`;
    default:
      return short(p, 160);
  }
}

// ---------------------------------------------------------------------------------------------

/** The live event list: filters by type pattern and session, pause/resume, click for the payload. */
export class EventMonitor {
  constructor({ list, detail, detailTitle, detailBody, count, lastSeq, pauseButton, maxRows = 4000 }) {
    this.list = list;
    this.detail = detail;
    this.detailTitle = detailTitle;
    this.detailBody = detailBody;
    this.countEl = count;
    this.lastSeqEl = lastSeq;
    this.pauseButton = pauseButton;
    this.maxRows = maxRows;
    this.patterns = [];
    this.session = "";
    this.paused = false;
    this.held = [];
    this.events = new Map(); // seq -> event, for the detail view
    this.total = 0;
    this.selected = null;
  }

  setFilter(typesText, session) {
    this.patterns = typesText
      .split(/[\s,]+/)
      .map((p) => p.trim())
      .filter(Boolean);
    this.session = session.trim();
    for (const row of this.list.children) {
      if (row.dataset.seq) row.hidden = !this._visible(row.dataset.type, row.dataset.session);
    }
  }

  _visible(type, session) {
    if (!typeMatches(type, this.patterns)) return false;
    return !this.session || (session || "").includes(this.session);
  }

  setPaused(paused) {
    this.paused = paused;
    this.pauseButton.setAttribute("aria-pressed", String(paused));
    if (!paused) {
      const held = this.held;
      this.held = [];
      for (const item of held) this._render(item);
    }
    this._updatePauseLabel();
  }

  _updatePauseLabel() {
    this.pauseButton.textContent = this.paused ? `Resume${this.held.length ? ` (${this.held.length})` : ""}` : "Pause";
  }

  add(event, type, receivedAt) {
    this.total += 1;
    const item = { kind: "event", event, type, receivedAt };
    if (this.paused) {
      this.held.push(item);
      this._updatePauseLabel();
    } else {
      this._render(item);
    }
    this.countEl.textContent = String(this.total);
    this.lastSeqEl.textContent = String(seqOf(event));
  }

  gap(gap) {
    const item = { kind: "gap", gap };
    if (this.paused) this.held.push(item);
    else this._render(item);
  }

  mark(text) {
    const item = { kind: "mark", text };
    if (this.paused) this.held.push(item);
    else this._render(item);
  }

  clear() {
    this.list.replaceChildren();
    this.events.clear();
    this.held = [];
    this.total = 0;
    this.countEl.textContent = "0";
    this.closeDetail();
    this._updatePauseLabel();
  }

  _render(item) {
    const stick = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 24;
    let row;
    if (item.kind === "gap") {
      row = element("li", "gap");
      row.dataset.gap = String(item.gap.missed);
      row.textContent = `⚠ ${item.gap.missed} events were lost: the bus no longer held seq ${item.gap.requestedAfterSeq + 1}–${item.gap.oldestSeq - 1}`;
    } else if (item.kind === "mark") {
      row = element("li", "mark", item.text);
    } else {
      const { event, type } = item;
      const seq = seqOf(event);
      row = element("li");
      row.dataset.seq = String(seq);
      row.dataset.type = type;
      row.dataset.session = event.sessionId || "";
      row.dataset.family = type.split(".")[0];
      const button = element("button");
      button.type = "button";
      button.setAttribute("aria-expanded", "false");
      button.append(
        element("span", "seq", String(seq)),
        element("span", "time", clockTime(timestampMs(event.time))),
        element("span", "type", type),
        element("span", "summary", summarize(type, event)),
      );
      button.title = `${type} from ${event.source || "?"}${event.sessionId ? ` · session ${event.sessionId}` : ""}`;
      button.addEventListener("click", () => this.showDetail(seq, button));
      row.append(button);
      row.hidden = !this._visible(type, event.sessionId);
      this.events.set(seq, event);
    }
    this.list.append(row);
    while (this.list.childElementCount > this.maxRows) {
      const first = this.list.firstElementChild;
      if (first.dataset.seq) this.events.delete(Number(first.dataset.seq));
      first.remove();
    }
    if (stick) this.list.scrollTop = this.list.scrollHeight;
  }

  showDetail(seq, button) {
    const event = this.events.get(seq);
    if (!event) return;
    if (this.selected) this.selected.setAttribute("aria-expanded", "false");
    this.selected = button;
    button.setAttribute("aria-expanded", "true");
    const type = button.parentElement.dataset.type;
    this.detailTitle.textContent = `#${seq} ${type}`;
    this.detailBody.textContent = JSON.stringify(event, null, 2);
    this.detail.hidden = false;
  }

  closeDetail() {
    if (this.selected) this.selected.setAttribute("aria-expanded", "false");
    this.selected = null;
    this.detail.hidden = true;
  }
}

// ---------------------------------------------------------------------------------------------

const STATES = ["starting", "ready", "degraded", "failed", "stopped"];

/** One tile per component: state from system.started / component.status, breakers from component.breaker. */
export class HealthTiles {
  constructor(container) {
    this.container = container;
    this.components = new Map();
    this._placeholder();
  }

  _placeholder() {
    this.container.replaceChildren(element("p", "placeholder muted small", "Waiting for components to report…"));
  }

  _component(name) {
    let c = this.components.get(name);
    if (!c) {
      c = { name, state: "unknown", reason: "", breakers: new Map(), latency: null };
      this.components.set(name, c);
    }
    return c;
  }

  onEvent(type, event) {
    const p = eventPayload(event);
    if (type === "system.started") {
      for (const name of p.components || []) {
        const c = this._component(name);
        c.state = "ready";
        c.reason = "";
      }
    } else if (type === "system.stopping") {
      for (const c of this.components.values()) {
        c.state = "stopped";
        c.reason = p.reason || "";
      }
    } else if (type === "component.status" && p.component) {
      const c = this._component(p.component);
      const state = enumName(p.state, "COMPONENT_STATE_");
      c.state = STATES.includes(state) ? state : "unknown";
      c.reason = p.reason || "";
    } else if (type === "component.breaker" && p.component) {
      const c = this._component(p.component);
      c.breakers.set(p.target || "", enumName(p.state, "BREAKER_STATE_"));
      if (p.reason) c.reason = p.reason;
    } else if (type === "component.health" && p.component) {
      this._component(p.component).latency = p.latencyMsP50;
    } else {
      return;
    }
    this.render();
  }

  render() {
    if (this.components.size === 0) return this._placeholder();
    const tiles = [];
    for (const c of this.components.values()) {
      const tile = element("div", "tile");
      tile.dataset.component = c.name;
      tile.dataset.state = c.state;
      const open = [...c.breakers.values()].find((s) => s === "open") || [...c.breakers.values()].find((s) => s === "half_open");
      if (open) tile.dataset.breaker = open;
      let detail = c.state;
      if (open) detail = `breaker ${open.replace("_", "-")}`;
      else if (c.breakers.size) detail += " · breakers closed";
      if (c.latency) detail += ` · p50 ${ms(c.latency)}`;
      const state = element("span", "state", detail);
      const breakerList = [...c.breakers.entries()].map(([target, s]) => `${target || "engine"}: ${s}`).join("\n");
      tile.title = [`${c.name}: ${c.state}`, c.reason, breakerList].filter(Boolean).join("\n");
      tile.setAttribute("aria-label", tile.title.replaceAll("\n", "; "));
      tile.append(element("span", "name", c.name), state);
      tiles.push(tile);
    }
    this.container.replaceChildren(...tiles);
  }
}

// ---------------------------------------------------------------------------------------------

/** Events per second (bars) and median delivery latency (line) over the last minute, on a canvas. */
export class LiveChart {
  constructor(canvas, { rateLabel, latencyLabel, seconds = 60 }) {
    this.canvas = canvas;
    this.rateLabel = rateLabel;
    this.latencyLabel = latencyLabel;
    this.seconds = seconds;
    this.buckets = new Map(); // second -> {count, latencies[]}
    setInterval(() => this.draw(), 1000);
  }

  record(receivedAt, latencyMs) {
    const second = Math.floor(receivedAt / 1000);
    let bucket = this.buckets.get(second);
    if (!bucket) {
      bucket = { count: 0, latencies: [] };
      this.buckets.set(second, bucket);
    }
    bucket.count += 1;
    if (Number.isFinite(latencyMs) && bucket.latencies.length < 2000) bucket.latencies.push(Math.max(0, latencyMs));
  }

  draw() {
    const now = Math.floor(Date.now() / 1000);
    for (const second of this.buckets.keys()) if (second < now - this.seconds) this.buckets.delete(second);
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const series = [];
    for (let s = now - this.seconds + 1; s <= now; s++) {
      const bucket = this.buckets.get(s);
      const latencies = bucket ? [...bucket.latencies].sort((a, b) => a - b) : [];
      series.push({ count: bucket ? bucket.count : 0, p50: latencies.length ? latencies[latencies.length >> 1] : null });
    }
    const style = getComputedStyle(document.documentElement);
    const accent = style.getPropertyValue("--accent").trim() || "#4f46e5";
    const muted = style.getPropertyValue("--muted").trim() || "#888";
    const maxCount = Math.max(5, ...series.map((p) => p.count));
    const maxLatency = Math.max(5, ...series.map((p) => p.p50 ?? 0));
    const barWidth = width / series.length;
    const top = 12;
    const plot = height - top - 2;
    ctx.globalAlpha = 0.55;
    ctx.fillStyle = accent;
    series.forEach((point, i) => {
      const h = (point.count / maxCount) * plot;
      ctx.fillRect(i * barWidth + 1, height - 2 - h, Math.max(1, barWidth - 2), h);
    });
    ctx.globalAlpha = 1;
    ctx.strokeStyle = "#f59e0b";
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    series.forEach((point, i) => {
      if (point.p50 === null) {
        started = false;
        return;
      }
      const x = i * barWidth + barWidth / 2;
      const y = height - 2 - (point.p50 / maxLatency) * plot;
      if (started) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
      started = true;
    });
    ctx.stroke();
    ctx.fillStyle = muted;
    ctx.globalAlpha = 0.4;
    ctx.fillRect(0, height - 1, width, 1);
    ctx.globalAlpha = 1;
    ctx.font = "10px system-ui, sans-serif";
    ctx.textBaseline = "top";
    ctx.fillText(`${maxCount}/s`, 2, 0);
    const label = `${ms(maxLatency)}`;
    ctx.fillText(label, width - ctx.measureText(label).width - 2, 0);
    const last = series[series.length - 2] || { count: 0, p50: null }; // the last complete second
    this.rateLabel.textContent = String(last.count);
    const recent = series.slice(-10).filter((p) => p.p50 !== null);
    this.latencyLabel.textContent = recent.length ? ms(recent[recent.length - 1].p50) : "–";
  }
}

// ---------------------------------------------------------------------------------------------

const SPAN_ORDER = ["stt", "memory", "llm", "tool", "first_token", "first_audio", "total"];
const SPAN_LABEL = { first_token: "first token", first_audio: "first audio", total: "whole turn" };

function spanKind(name) {
  if (name.startsWith("tool:")) return "tool";
  if (name === "first_token" || name === "first_audio") return "mark";
  return SPAN_ORDER.includes(name) ? name : "llm";
}

/** Per-turn latency waterfalls from trace.span events (grouped by correlation id). */
export class Waterfall {
  constructor({ container, select, empty, maxTurns = 30 }) {
    this.container = container;
    this.select = select;
    this.empty = empty;
    this.maxTurns = maxTurns;
    this.turns = new Map(); // correlationId -> {spans: Map, label, at}
    this.follow = true;
    select.addEventListener("change", () => {
      this.follow = select.selectedIndex === 0;
      this.render();
    });
  }

  onEvent(type, event) {
    const id = event.correlationId;
    if (!id) return;
    if (type === "trace.span") {
      const span = eventPayload(event);
      const turn = this._turn(id);
      turn.spans.set(span.spanId || `${span.name}-${turn.spans.size}`, span);
      this._refresh(id);
    } else if (type === "conversation.turn") {
      const p = eventPayload(event);
      const turn = this._turn(id);
      turn.label = p.userText || turn.label;
      this._refresh(id);
    }
  }

  _turn(id) {
    let turn = this.turns.get(id);
    if (!turn) {
      turn = { spans: new Map(), label: "", at: Date.now() };
      this.turns.set(id, turn);
      while (this.turns.size > this.maxTurns) this.turns.delete(this.turns.keys().next().value);
    }
    return turn;
  }

  _refresh(id) {
    this._options();
    if (this.follow || this.select.value === id) this.render();
  }

  _options() {
    const selected = this.follow ? "" : this.select.value;
    const options = [element("option", "", "Latest turn")];
    options[0].value = "";
    for (const [id, turn] of [...this.turns.entries()].reverse()) {
      const option = element("option", "", `${clockTime(turn.at).slice(0, 5)} ${turn.label ? short(turn.label, 40) : id}`);
      option.value = id;
      options.push(option);
    }
    this.select.replaceChildren(...options);
    this.select.value = selected;
  }

  /** The turn shown: the chosen one, or the newest with spans. */
  current() {
    if (!this.follow && this.turns.has(this.select.value)) return [this.select.value, this.turns.get(this.select.value)];
    const entries = [...this.turns.entries()].filter(([, t]) => t.spans.size > 0);
    return entries.length ? entries[entries.length - 1] : [null, null];
  }

  render() {
    const [id, turn] = this.current();
    if (!turn) {
      this.container.replaceChildren();
      this.empty.hidden = false;
      return;
    }
    this.empty.hidden = true;
    const spans = [...turn.spans.values()].map((s) => ({ ...s, startMs: timestampMs(s.start), durationMs: Number(s.durationMs || 0) }));
    const origin = Math.min(...spans.map((s) => s.startMs));
    const end = Math.max(...spans.map((s) => s.startMs + s.durationMs));
    const totalMs = Math.max(1, end - origin);
    // Phases in start order, then the milestones (first token, first audio), then the whole turn.
    const rank = (s) => (s.name === "total" ? 2 : spanKind(s.name) === "mark" ? 1 : 0);
    spans.sort((a, b) => rank(a) - rank(b) || a.startMs - b.startMs || a.durationMs - b.durationMs);
    const rows = [element("p", "wf-head", turn.label ? `“${short(turn.label, 70)}”` : `turn ${id}`)];
    for (const span of spans) {
      const row = element("div", "wf-row");
      row.dataset.span = span.name;
      const label = SPAN_LABEL[span.name] || (span.name.startsWith("tool:") ? `${span.name.slice(5)}()` : span.name);
      const name = element("span", "wf-name", label);
      name.title = Object.entries(span.attributes || {})
        .map(([k, v]) => `${k}: ${v}`)
        .join("\n");
      const track = element("span", "wf-track");
      const bar = element("span", "wf-bar");
      bar.dataset.kind = span.name === "total" ? "total" : spanKind(span.name);
      bar.style.left = `${((span.startMs - origin) / totalMs) * 100}%`;
      bar.style.width = `${Math.max(0.4, (span.durationMs / totalMs) * 100)}%`;
      track.append(bar);
      const offset = span.startMs - origin;
      const figure = spanKind(span.name) === "mark" ? `@${ms(offset + span.durationMs)}` : ms(span.durationMs);
      row.append(name, track, element("span", "wf-ms", figure));
      row.setAttribute("aria-label", `${label}: starts at ${ms(offset)}, ${ms(span.durationMs)}`);
      rows.push(row);
    }
    const axis = element("div", "wf-axis");
    axis.append(element("span", "", "0"), element("span", "", ms(totalMs / 2)), element("span", "", ms(totalMs)));
    rows.push(axis);
    this.container.replaceChildren(...rows);
  }
}
