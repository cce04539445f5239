/**
 * coda-client.js: a small client of the Coda bridge (ws://HOST:8765/v1/ws, subprotocol coda.v1.json).
 *
 * Usable by any web app, no dependencies:
 *
 *   import { CodaClient } from "/coda-client.js";
 *   const coda = new CodaClient();                     // the page's own bridge; or { url: "ws://…/v1/ws" }
 *   coda.addEventListener("event", (e) => console.log(e.detail.type, e.detail.event));
 *   coda.addEventListener("turn", (e) => console.log(e.detail.type, e.detail.event)); // this conversation
 *   coda.connect();
 *   coda.subscribe({ types: ["llm.*", "tool.*"] });      // bus events; resumed across reconnects
 *   const session = await coda.openSession();           // or openSession({ sessionId }) to resume one
 *   coda.sendText("what time is it in Tokyo");
 *
 * Events (all CustomEvent, data in `detail`):
 *   state      {state: "connecting"|"open"|"reconnecting"|"closed", attempt, delayMs, reason}
 *   hello      the HelloFrame (connection id, head seq, limits)
 *   event      {event, type, receivedAt}  one bus event, in seq order, never twice
 *   gap        {requestedAfterSeq, oldestSeq, missed}  the bus no longer held some events
 *   reset      {epoch, previousEpoch, requestedAfterSeq}  the bus log was replaced (a bus without a
 *              durable log restarted): seqs start over, the events that follow are the new log's
 *              from its start; anything keyed by seq from before is stale
 *   session    SessionInfo after openSession (history included)
 *   turn       {event, type, receivedAt}  one event of this connection's conversation (Converse stream)
 *   error      the ErrorFrame ({code, message, clientFrameId})
 *   pong       the PongFrame
 *
 * Resume: the client remembers the newest seq it delivered; after a dropped socket it reconnects
 * with exponential backoff and subscribes with `afterSeq` = that seq, and drops any event whose seq
 * it has already delivered, so a listener sees every retained event exactly once. The seq belongs
 * to one epoch of the bus log (`epoch`, from the hello); the subscribe carries it, and when the log
 * was replaced the bridge answers with a reset: the client forgets its seq, emits `reset`, and
 * delivers the new log from its start. The open conversation is reopened (resumed) on the new socket.
 *
 * Binary frames on coda.v1.json are raw PCM16 audio of the current spoken turn (sendAudio).
 */

import { CONVERSE_RESPONSES, ENVELOPE_FIELDS, EVENT_FIELDS, EVENT_TYPES, PROTOCOLS, WS_PATH } from "./coda-schema.js";

export { EVENT_FIELDS, EVENT_TYPES };

/** The dotted type of an Event in canonical JSON (e.g. "llm.token"), or "" when it has no payload. */
export function eventType(event) {
  for (const key in event) {
    const type = EVENT_TYPES[key];
    if (type !== undefined) return type;
  }
  return "";
}

/** The payload of an Event in canonical JSON (the object under its payload key), or {}. */
export function eventPayload(event) {
  for (const key in event) {
    if (EVENT_TYPES[key] !== undefined) return event[key] ?? {};
  }
  return {};
}

/** The envelope (seq, id, time, …) of an Event, without its payload. */
export function eventEnvelope(event) {
  const out = {};
  for (const key of ENVELOPE_FIELDS) if (key in event) out[key] = event[key];
  return out;
}

/** uint64 fields arrive as decimal strings in canonical JSON; seqs stay well below 2^53. */
export function seqOf(event) {
  return Number(event.seq ?? 0);
}

/**
 * Does a dotted type match a filter pattern? Same globs as the bus: exact, `llm.*`, `voice.stt_*`, `*`.
 * A pattern list matches when any of its patterns does; an empty list matches everything.
 */
export function typeMatches(type, patterns) {
  if (!patterns || patterns.length === 0) return true;
  return patterns.some((pattern) => globToRegExp(pattern).test(type));
}

const globCache = new Map();
function globToRegExp(pattern) {
  let re = globCache.get(pattern);
  if (!re) {
    const body = pattern.trim().replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
    re = new RegExp(`^${body}$`);
    globCache.set(pattern, re);
  }
  return re;
}

/** Base64 (protobuf JSON `bytes`) to an ArrayBuffer. */
export function base64ToBytes(text) {
  const binary = atob(text || "");
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function defaultUrl() {
  if (typeof location === "undefined") return `ws://127.0.0.1:8765${WS_PATH}`;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${WS_PATH}`;
}

let frameCounter = 0;
function nextId(prefix) {
  frameCounter += 1;
  return `${prefix}-${frameCounter}`;
}

function newTurnId() {
  const random = globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`;
  return `t-${random.replaceAll("-", "").slice(0, 16)}`;
}

export class CodaClient extends EventTarget {
  /**
   * @param {object} [options]
   * @param {string} [options.url]              WebSocket URL (default: this page's bridge)
   * @param {string} [options.token]            bearer token (sent as ?token=: browsers cannot set headers on WebSockets)
   * @param {number} [options.reconnectInitialMs] first reconnect delay (doubles, with jitter)
   * @param {number} [options.reconnectMaxMs]   longest reconnect delay
   * @param {number} [options.pingIntervalMs]   application pings keep the connection out of the idle timeout
   */
  constructor(options = {}) {
    super();
    this.url = options.url || defaultUrl();
    this.token = options.token || "";
    this.reconnectInitialMs = options.reconnectInitialMs ?? 250;
    this.reconnectMaxMs = options.reconnectMaxMs ?? 8000;
    this.pingIntervalMs = options.pingIntervalMs ?? 25000;
    /** The newest bus seq delivered to listeners; resume point after a reconnect. */
    this.lastSeq = 0;
    /** The bus log epoch `lastSeq` belongs to ("" until the first hello). */
    this.epoch = "";
    this.hello = null;
    this.state = "closed";
    /** The open conversation's SessionInfo (after openSession). */
    this.session = null;
    this.ws = null;
    this._subscription = null;
    this._fromStart = false;
    this._wanted = false;
    this._attempt = 0;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._pendingOpen = null;
    this._sessionWanted = null;
    this._audioTurn = "";
    this._conversationOpen = false;
  }

  // --- connection --------------------------------------------------------------------------

  /** Open the socket (and keep it open: reconnects until close()). */
  connect() {
    this._wanted = true;
    if (!this.ws) this._open();
    return this;
  }

  /** Close for good (no reconnect). */
  close() {
    this._wanted = false;
    clearTimeout(this._reconnectTimer);
    clearInterval(this._pingTimer);
    if (this.ws) this.ws.close(1000, "client closed");
    this.ws = null;
    this._setState("closed", {});
  }

  get connected() {
    return this.state === "open";
  }

  _open() {
    const url = this.token ? `${this.url}${this.url.includes("?") ? "&" : "?"}token=${encodeURIComponent(this.token)}` : this.url;
    this._setState(this._attempt ? "reconnecting" : "connecting", { attempt: this._attempt });
    let ws;
    try {
      ws = new WebSocket(url, [PROTOCOLS.json]);
    } catch (error) {
      this._scheduleReconnect(String(error));
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onmessage = (message) => {
      if (this.ws === ws) this._onMessage(message.data);
    };
    ws.onclose = (closed) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this._pingTimer);
      this._conversationOpen = false;
      this._audioTurn = "";
      const reason = closed.reason || (closed.code === 1006 ? "connection lost" : `closed (${closed.code})`);
      if (this._wanted) this._scheduleReconnect(reason, closed.code);
      else this._setState("closed", { reason, code: closed.code });
    };
  }

  _scheduleReconnect(reason, code) {
    this._attempt += 1;
    const base = Math.min(this.reconnectMaxMs, this.reconnectInitialMs * 2 ** (this._attempt - 1));
    const delayMs = Math.round(base * (0.75 + Math.random() * 0.5));
    this._setState("reconnecting", { attempt: this._attempt, delayMs, reason, code });
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => {
      if (this._wanted && !this.ws) this._open();
    }, delayMs);
  }

  /** Drop the socket now and reconnect at once (resuming events and the conversation). */
  reconnectNow() {
    clearTimeout(this._reconnectTimer);
    const ws = this.ws;
    this.ws = null;
    this._conversationOpen = false;
    if (ws) ws.close(1000, "reconnect");
    this._attempt = 0;
    if (this._wanted) this._open();
  }

  _setState(state, detail) {
    this.state = state;
    this._emit("state", { state, ...detail });
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  _send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  // --- inbound ---------------------------------------------------------------------------------

  _onMessage(data) {
    if (typeof data !== "string") return; // the server sends text frames on coda.v1.json
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.hello) this._onHello(frame.hello);
    else if (frame.events) this._onEvents(frame.events.events || []);
    else if (frame.gap) this._onGap(frame.gap);
    else if (frame.reset) this._onReset(frame.reset);
    else if (frame.converse) this._onConverse(frame.converse);
    else if (frame.error) this._emit("error", frame.error);
    else if (frame.pong) this._emit("pong", frame.pong);
  }

  _onHello(hello) {
    this.hello = hello;
    const epoch = hello.epoch || "";
    if (!this.epoch) this.epoch = epoch;
    else if (epoch && epoch !== this.epoch && !this._subscription) {
      // Not subscribed, so no subscribe will carry the old epoch: the reset is noticed here.
      this._onReset({ epoch, previousEpoch: this.epoch, requestedAfterSeq: String(this.lastSeq) });
    }
    const resumed = this._attempt > 0;
    this._attempt = 0;
    this._setState("open", { resumed });
    this._emit("hello", hello);
    clearInterval(this._pingTimer);
    this._pingTimer = setInterval(() => this.ping(), this.pingIntervalMs);
    if (this._subscription) this._sendSubscribe();
    if (this._sessionWanted) this._sendOpen();
  }

  _onEvents(events) {
    const receivedAt = Date.now();
    for (const event of events) {
      const seq = seqOf(event);
      if (seq <= this.lastSeq) continue; // already delivered (replay overlap after a resume)
      this.lastSeq = seq;
      this._emit("event", { event, type: eventType(event), receivedAt });
    }
  }

  _onGap(gap) {
    const oldest = Number(gap.oldestSeq ?? 0);
    // Delivery continues at oldestSeq: anything before it is gone, not merely late.
    if (oldest > 0) this.lastSeq = Math.max(this.lastSeq, oldest - 1);
    this._emit("gap", {
      requestedAfterSeq: Number(gap.requestedAfterSeq ?? 0),
      oldestSeq: oldest,
      missed: Number(gap.missed ?? 0),
    });
  }

  _onReset(reset) {
    // Seqs start over in the new log: the old position means nothing there.
    const previousEpoch = reset.previousEpoch || this.epoch;
    this.epoch = reset.epoch || "";
    this.lastSeq = 0;
    // A resume before the first event of the new log still starts at its beginning.
    this._fromStart = true;
    this._emit("reset", {
      epoch: this.epoch,
      previousEpoch,
      requestedAfterSeq: Number(reset.requestedAfterSeq ?? 0),
    });
  }

  _onConverse(response) {
    if (response.session) {
      this.session = response.session;
      this._conversationOpen = true;
      this._sessionWanted = { sessionId: response.session.sessionId };
      const pending = this._pendingOpen;
      this._pendingOpen = null;
      this._emit("session", response.session);
      if (pending) pending.resolve(response.session);
    } else if (response.event) {
      const event = response.event;
      const type = eventType(event);
      if (type === "conversation.ended") this._conversationOpen = false;
      this._emit("turn", { event, type, receivedAt: Date.now() });
    }
  }

  // --- bus events ----------------------------------------------------------------------------

  /**
   * Subscribe to bus events (replaces the previous subscription; kept across reconnects).
   * @param {object} [options]
   * @param {string[]} [options.types]   type patterns, e.g. ["llm.*", "tool.*"]; empty: every type
   * @param {string} [options.sessionId] only this session's events
   * @param {number} [options.history]   on the first subscribe, also replay up to this many retained events
   * @param {number} [options.afterSeq]  resume after this seq (default: the last seq seen)
   * @param {boolean} [options.currentState] first get the components' newest state events (health tiles)
   */
  subscribe(options = {}) {
    this._subscription = {
      types: options.types || [],
      sessionId: options.sessionId || "",
      history: options.history || 0,
      currentState: Boolean(options.currentState),
    };
    if (options.afterSeq !== undefined) this.lastSeq = options.afterSeq;
    this._sendSubscribe();
  }

  unsubscribe() {
    this._subscription = null;
    this._send({ id: nextId("unsub"), unsubscribe: {} });
  }

  _sendSubscribe() {
    const sub = this._subscription;
    const frame = { types: sub.types, sessionId: sub.sessionId };
    if (sub.currentState) frame.currentState = true;
    if (this.lastSeq > 0 || this._fromStart) {
      frame.afterSeq = String(this.lastSeq);
      if (this.epoch) frame.epoch = this.epoch;
    } else if (sub.history > 0 && this.hello) {
      const head = Number(this.hello.headSeq ?? 0);
      frame.afterSeq = String(Math.max(0, head - sub.history));
    }
    this._send({ id: nextId("sub"), subscribe: frame });
  }

  /** Ask for a pong (carries the bridge's newest seq). */
  ping() {
    return this._send({ id: nextId("ping"), ping: { nonce: String(Date.now()) } });
  }

  // --- conversation ----------------------------------------------------------------------

  _converse(request) {
    return this._send({ id: nextId("c"), converse: request });
  }

  /**
   * Open a conversation: a new session (no sessionId) or a previous one, whose history comes back
   * in SessionInfo.history. Resolves with the SessionInfo. Switching to another session restarts
   * the socket (one conversation per connection), resuming bus events where they were.
   * @param {object} [options] {sessionId, userId, settings: ConversationSettings}
   */
  openSession(options = {}) {
    const switching = this._conversationOpen;
    this._sessionWanted = {
      sessionId: options.sessionId || "",
      userId: options.userId || "",
      settings: options.settings,
    };
    if (this._pendingOpen) this._pendingOpen.reject(new Error("superseded by another openSession"));
    const promise = new Promise((resolve, reject) => {
      this._pendingOpen = { resolve, reject };
    });
    if (switching) {
      this._converse({ close: { reason: "switched session" } });
      this.reconnectNow();
    } else if (this.connected) {
      this._sendOpen();
    }
    return promise;
  }

  _sendOpen() {
    const wanted = this._sessionWanted;
    const open = {};
    if (wanted.sessionId) open.sessionId = wanted.sessionId;
    if (wanted.userId) open.userId = wanted.userId;
    // Settings go with the first open only; a resumed session keeps what it has.
    if (wanted.settings && !wanted.sent) open.settings = wanted.settings;
    wanted.sent = true;
    this._conversationOpen = true;
    this._converse({ open });
  }

  /** Send a typed turn; returns its turn id. */
  sendText(text, turnId = newTurnId()) {
    this._converse({ text: { text, turnId } });
    return turnId;
  }

  /** Begin a spoken turn of PCM16 mono audio at `sampleRate`; returns its turn id. */
  startAudio({ sampleRate = 16000, turnId = newTurnId() } = {}) {
    this._audioTurn = turnId;
    this._converse({
      audioStart: { format: { encoding: "AUDIO_ENCODING_PCM16", sampleRate, channels: 1 }, turnId },
    });
    return turnId;
  }

  /** Microphone audio of the current spoken turn: PCM16 little-endian (ArrayBuffer or Int16Array). */
  sendAudio(pcm) {
    if (!this._audioTurn || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(pcm instanceof ArrayBuffer ? pcm : pcm.buffer.slice(pcm.byteOffset, pcm.byteOffset + pcm.byteLength));
    return true;
  }

  /** End the spoken turn (the server's VAD may have ended it already). */
  endAudio() {
    if (!this._audioTurn) return;
    this._audioTurn = "";
    this._converse({ audioEnd: {} });
  }

  get audioTurn() {
    return this._audioTurn;
  }

  /** Interrupt the running turn (barge-in); empty turnId: whatever is running. */
  cancel(turnId = "") {
    return this._converse({ cancel: turnId ? { turnId } : {} });
  }

  /** Change the conversation's settings (ConversationSettings: voiceOutput, provider, persona, …). */
  updateSettings(settings) {
    return this._converse({ settings });
  }

  /** End the conversation (conversation.ended); the session stays resumable by id. */
  closeSession(reason = "closed by the user") {
    this._sessionWanted = null;
    this._conversationOpen = false;
    return this._converse({ close: { reason } });
  }
}

export { CONVERSE_RESPONSES };
