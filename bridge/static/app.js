/**
 * The Coda page: wires the client library to the chat, talk, watch and session controls.
 */

import { Microphone, MIC_SAMPLE_RATE, Player } from "./audio.js";
import { ChatView } from "./chat.js";
import { CodaClient, base64ToBytes, eventPayload, seqOf } from "./coda-client.js";
import { EventMonitor, HealthTiles, LiveChart, Waterfall, timestampMs } from "./watch.js";

const $ = (id) => document.getElementById(id);

// --- sessions remembered by this browser ------------------------------------------------------

const SESSIONS_KEY = "coda.sessions";
const CURRENT_KEY = "coda.session";

const sessionStore = {
  list() {
    try {
      const value = JSON.parse(localStorage.getItem(SESSIONS_KEY) || "[]");
      return Array.isArray(value) ? value.filter((s) => s && typeof s.id === "string") : [];
    } catch {
      return [];
    }
  },
  save(list) {
    localStorage.setItem(SESSIONS_KEY, JSON.stringify(list.slice(0, 30)));
  },
  touch(id, title) {
    const list = this.list();
    const old = list.find((s) => s.id === id);
    const entry = { id, title: title || old?.title || "", updated: Date.now() };
    this.save([entry, ...list.filter((s) => s.id !== id)]);
  },
  get current() {
    return localStorage.getItem(CURRENT_KEY) || "";
  },
  set current(id) {
    localStorage.setItem(CURRENT_KEY, id);
  },
};

// --- the parts --------------------------------------------------------------------------------

// A bridge that requires auth: open the page as /?token=…
const client = new CodaClient({ token: new URLSearchParams(location.search).get("token") || "" });
window.coda = client; // handy in the console, and for the browser tests

const chat = new ChatView({ container: $("messages"), welcome: $("welcome") });
const monitor = new EventMonitor({
  list: $("event-list"),
  detail: $("event-detail"),
  detailTitle: $("event-detail-title"),
  detailBody: $("event-detail-body"),
  count: $("event-count"),
  lastSeq: $("last-seq"),
  pauseButton: $("pause"),
});
const tiles = new HealthTiles($("health"));
const chart = new LiveChart($("chart"), { rateLabel: $("rate-now"), latencyLabel: $("latency-now") });
const waterfall = new Waterfall({ container: $("waterfall"), select: $("turn-select"), empty: $("waterfall-empty") });
const player = new Player();

let liveFromSeq = Infinity; // events above the head seq at connect are live (their latency is meaningful)
let currentSession = "";
let answering = ""; // the turn whose answer is running
const silenced = new Set(); // turns whose audio must not play (stopped, interrupted)

// --- connection state and the banner -----------------------------------------------------------

function setConnection(state, text) {
  $("connection").dataset.state = state;
  $("connection-text").textContent = text;
}

let bannerTimer = 0;
client.addEventListener("state", ({ detail }) => {
  const banner = $("banner");
  clearTimeout(bannerTimer);
  if (detail.state === "open") {
    setConnection("open", "Connected");
    if (detail.resumed) {
      banner.dataset.kind = "ok";
      $("banner-text").textContent = `Reconnected; events resumed after #${client.lastSeq}.`;
      $("banner-retry").hidden = true;
      banner.hidden = false;
      bannerTimer = setTimeout(() => (banner.hidden = true), 3000);
      monitor.mark(`reconnected: resumed after seq ${client.lastSeq}`);
    } else {
      banner.hidden = true;
    }
  } else if (detail.state === "reconnecting") {
    setConnection("reconnecting", "Reconnecting…");
    banner.dataset.kind = "warn";
    const wait = detail.delayMs ? ` in ${(detail.delayMs / 1000).toFixed(1)} s` : "";
    $("banner-text").textContent = `Connection to Coda lost (${detail.reason || "closed"}). Reconnecting${wait} (attempt ${detail.attempt})…`;
    $("banner-retry").hidden = false;
    banner.hidden = false;
    if (answering) {
      chat.answers.get(answering)?.interrupted("disconnect");
      answering = "";
      updateStop();
    }
    if (mode || listeningTurn) stopListening("connection lost");
  } else if (detail.state === "connecting") {
    setConnection("connecting", "Connecting…");
  } else {
    setConnection("closed", "Disconnected");
  }
});
$("banner-retry").addEventListener("click", () => client.reconnectNow());

client.addEventListener("hello", ({ detail }) => {
  liveFromSeq = Number(detail.headSeq || 0);
});

// --- bus events: the watch side ------------------------------------------------------------------

client.addEventListener("event", ({ detail }) => {
  const { event, type, receivedAt } = detail;
  monitor.add(event, type, receivedAt);
  const live = seqOf(event) > liveFromSeq;
  chart.record(receivedAt, live ? receivedAt - timestampMs(event.time) : NaN);
  tiles.onEvent(type, event);
  waterfall.onEvent(type, event);
});
client.addEventListener("gap", ({ detail }) => monitor.gap(detail));
client.addEventListener("reset", () => monitor.mark("⚠ the bus log was reset (Coda restarted without a durable log): seqs start over"));
client.addEventListener("error", ({ detail }) => {
  const message = detail.message || "error";
  if (/audio|frames per second/.test(message)) $("mic-status").textContent = message;
  else chat.note(`Bridge: ${message}`, true);
});

// --- the conversation --------------------------------------------------------------------------

client.addEventListener("session", ({ detail: session }) => {
  const id = session.sessionId;
  if (id !== currentSession) {
    currentSession = id;
    chat.clear();
    chat.showHistory(session.history || []);
  }
  sessionStore.current = id;
  const history = session.history || [];
  sessionStore.touch(id, history.length ? history[0].userText : "");
  $("session-id").textContent = id;
  fillSettings(session.settings || {});
  renderSessions();
});

client.addEventListener("turn", ({ detail }) => {
  const { event, type } = detail;
  const turnId = event.correlationId;
  chat.onTurnEvent(type, event);
  waterfall.onEvent(type, event);
  const p = eventPayload(event);
  switch (type) {
    case "memory.retrieved":
    case "llm.request_started":
      if (turnId && turnId !== answering && !silenced.has(turnId)) {
        answering = turnId;
        updateStop();
      }
      break;
    case "voice.stt_partial":
      if (turnId === listeningTurn) showPartial(p.text);
      break;
    case "voice.vad_speech_started":
      if (turnId === listeningTurn) {
        // The user speaks over the answer: stop playing it now (the server interrupts it too).
        if (player.playing) player.stop();
        if (answering && answering !== turnId) silenced.add(answering);
      }
      break;
    case "voice.stt_final":
      if (turnId === listeningTurn) onFinalTranscript(turnId, p.text || "");
      break;
    case "voice.tts_audio":
      if (!silenced.has(turnId) && p.pcm) {
        player.play(base64ToBytes(p.pcm), p.sampleRate);
        chat.answers.get(turnId)?.speaking(true);
        speakingTurn = turnId;
      }
      break;
    case "conversation.turn":
    case "conversation.interrupted":
      if (turnId === answering) {
        answering = "";
        updateStop();
      }
      if (turnId === listeningTurn) onListeningEnded(turnId);
      if (type === "conversation.turn" && p.userText && currentSession) sessionStore.touch(currentSession, "");
      renderSessions();
      break;
    case "system.error":
      onSystemError(turnId, p);
      break;
    case "conversation.settings":
      fillSettings(p);
      $("settings-status").textContent = "Saved";
      setTimeout(() => ($("settings-status").textContent = ""), 2000);
      break;
    default:
      break;
  }
});

function onSystemError(turnId, p) {
  // Audio chunks that reach the server just after it finished listening are refused: harmless.
  if (p.details === "audio_chunk") return;
  if (turnId && turnId === listeningTurn && /no speech/.test(p.message || "")) {
    chat.dropUser(turnId);
    $("mic-status").textContent = "I didn't catch that. Try again?";
    onListeningEnded(turnId);
    return;
  }
  chat.note(p.message || "error", (p.level || "").includes("ERROR"));
}

let speakingTurn = "";
player.onchange = (playing) => {
  if (!playing && speakingTurn) chat.answers.get(speakingTurn)?.speaking(false);
  updateStop();
};

function updateStop() {
  $("stop").disabled = !(answering || player.playing);
}

function stopAnswer() {
  if (player.playing) player.stop();
  if (answering) {
    silenced.add(answering);
    client.cancel(answering);
  }
  updateStop();
}

// --- typing ---------------------------------------------------------------------------------------

const input = $("composer-input");

function send(text) {
  text = text.trim();
  if (!text) return;
  if (!client.session) {
    chat.note("Not connected yet: your message was not sent.", true);
    return;
  }
  player.unlock();
  if (player.playing) player.stop();
  if (answering) silenced.add(answering);
  const turnId = client.sendText(text);
  chat.user(turnId, text);
  chat.answer(turnId);
  chat.scrollToEnd();
  if (!sessionStore.list().find((s) => s.id === currentSession)?.title) sessionStore.touch(currentSession, text);
  renderSessions();
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  send(input.value);
  input.value = "";
  autosize();
});
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
function autosize() {
  input.style.height = "auto";
  input.style.height = `${Math.min(160, input.scrollHeight)}px`;
}
input.addEventListener("input", autosize);
for (const chip of document.querySelectorAll("[data-say]")) {
  chip.addEventListener("click", () => send(chip.dataset.say));
}
$("stop").addEventListener("click", stopAnswer);
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && (answering || player.playing)) stopAnswer();
});

// --- talking ----------------------------------------------------------------------------------

const mic = new Microphone({
  onChunk: (pcm) => client.sendAudio(pcm),
  onLevel: (level) => {
    $("meter-bar").style.width = `${Math.min(100, Math.round(level * 400))}%`;
  },
});
let listeningTurn = "";
let mode = ""; // "", "push" or "handsfree"

async function startListening(newMode) {
  if (!client.session) {
    $("mic-status").textContent = "Not connected yet.";
    return false;
  }
  $("mic-status").classList.remove("bad");
  player.unlock();
  try {
    $("mic-status").textContent = mic.isOpen ? "" : "Opening the microphone…";
    await mic.open();
  } catch (error) {
    $("mic-status").textContent = error.message;
    $("mic-status").classList.add("bad");
    setMode("");
    return false;
  }
  setMode(newMode);
  beginUtterance();
  return true;
}

function beginUtterance() {
  listeningTurn = client.startAudio({ sampleRate: MIC_SAMPLE_RATE });
  mic.start();
  $("listening").hidden = false;
  showPartial("");
  $("mic-status").textContent = mode === "handsfree" ? "Hands-free: listening. Speak any time." : "Listening… release to send.";
}

function showPartial(text) {
  $("partial").textContent = text || "Listening…";
  if (text && listeningTurn) chat.user(listeningTurn, text, "spoken", true);
}

function onFinalTranscript(turnId, text) {
  if (text) {
    chat.user(turnId, text, "spoken", false);
    if (!sessionStore.list().find((s) => s.id === currentSession)?.title) sessionStore.touch(currentSession, text);
    renderSessions();
  }
  onListeningEnded(turnId);
}

/** The server stopped listening for this turn (final transcript, nothing heard, or the turn ended). */
function onListeningEnded(turnId) {
  if (turnId !== listeningTurn) return;
  listeningTurn = "";
  if (mode === "handsfree" && client.connected) {
    client.endAudio();
    beginUtterance();
  } else {
    stopListening();
  }
}

function stopListening(reason = "") {
  mic.stop();
  if (listeningTurn) {
    client.endAudio();
    // Push-to-talk: the transcript is still coming; keep the turn id until it does.
  }
  if (mode === "handsfree" || reason) {
    listeningTurn = "";
    setMode("");
  }
  $("listening").hidden = true;
  if (!reason) $("mic-status").textContent = "";
  else $("mic-status").textContent = `Stopped listening: ${reason}.`;
}

function setMode(newMode) {
  mode = newMode;
  $("talk").setAttribute("aria-pressed", String(newMode === "push"));
  $("handsfree").setAttribute("aria-pressed", String(newMode === "handsfree"));
  if (!newMode) $("listening").hidden = true;
}

async function pressTalk() {
  if (mode) return;
  stopAnswer();
  await startListening("push");
}
function releaseTalk() {
  if (mode !== "push") return;
  setMode("");
  mic.stop();
  client.endAudio();
  $("listening").hidden = true;
  $("mic-status").textContent = "";
}

const talk = $("talk");
talk.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  talk.setPointerCapture?.(e.pointerId);
  pressTalk();
});
talk.addEventListener("pointerup", releaseTalk);
talk.addEventListener("pointercancel", releaseTalk);
talk.addEventListener("keydown", (e) => {
  if ((e.key === " " || e.key === "Enter") && !e.repeat) {
    e.preventDefault();
    pressTalk();
  }
});
talk.addEventListener("keyup", (e) => {
  if (e.key === " " || e.key === "Enter") releaseTalk();
});
document.addEventListener("keydown", (e) => {
  if (e.altKey && e.code === "Space" && !e.repeat) {
    e.preventDefault();
    pressTalk();
  }
});
document.addEventListener("keyup", (e) => {
  if (e.code === "Space" || e.key === "Alt") releaseTalk();
});
$("handsfree").addEventListener("click", () => {
  if (mode === "handsfree") stopListening();
  else if (!mode) startListening("handsfree");
});

// --- sessions and settings -------------------------------------------------------------------------

function renderSessions() {
  const list = sessionStore.list();
  const items = list.map((s) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.session = s.id;
    if (s.id === currentSession) button.setAttribute("aria-current", "true");
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = s.title || "New conversation";
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = new Date(s.updated).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
    button.append(title, when);
    button.addEventListener("click", () => openSession(s.id));
    li.append(button);
    return li;
  });
  $("session-list").replaceChildren(...items);
  $("session-empty").hidden = items.length > 0;
}

async function openSession(sessionId) {
  closeDrawer();
  if (sessionId && sessionId === currentSession) return;
  stopListening();
  player.stop();
  if (answering) silenced.add(answering);
  answering = "";
  updateStop();
  try {
    await client.openSession({ sessionId });
  } catch {
    /* superseded by a later choice */
  }
}

$("new-session").addEventListener("click", () => {
  currentSession = "\u0000"; // force a fresh view even before the new id arrives
  openSession("");
});

function fillSettings(settings) {
  $("opt-voice").checked = Boolean(settings.voiceOutput);
  if (settings.provider !== undefined) $("opt-provider").value = settings.provider || "";
  if (settings.persona !== undefined) $("opt-persona").value = settings.persona || "";
}

$("settings-form").addEventListener("submit", (e) => {
  e.preventDefault();
  client.updateSettings({
    voiceOutput: $("opt-voice").checked,
    provider: $("opt-provider").value.trim(),
    persona: $("opt-persona").value.trim(),
  });
  $("settings-status").textContent = "Saving…";
});
$("opt-voice").addEventListener("change", () => {
  player.unlock();
  $("settings-form").requestSubmit();
});

// --- watch controls ---------------------------------------------------------------------------------

function applyFilters() {
  monitor.setFilter($("filter-types").value, $("filter-session").value);
}
$("filter-types").addEventListener("input", applyFilters);
$("filter-session").addEventListener("input", applyFilters);
$("event-filters").addEventListener("submit", (e) => e.preventDefault());
$("pause").addEventListener("click", () => monitor.setPaused(!monitor.paused));
$("clear-events").addEventListener("click", () => monitor.clear());
$("event-detail-close").addEventListener("click", () => monitor.closeDetail());

const tabs = [
  [$("tab-events"), $("panel-events")],
  [$("tab-latency"), $("panel-latency")],
];
function selectTab(index) {
  tabs.forEach(([tab, panel], i) => {
    const on = i === index;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    panel.hidden = !on;
  });
  if (index === 1) waterfall.render();
}
tabs.forEach(([tab], i) => {
  tab.addEventListener("click", () => selectTab(i));
  tab.addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      const next = (i + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length;
      selectTab(next);
      tabs[next][0].focus();
    }
  });
});

// Phone layout: chat and watch are two views.
for (const button of document.querySelectorAll(".view-tab")) {
  button.addEventListener("click", () => {
    document.querySelector(".layout").dataset.view = button.dataset.view;
    for (const other of document.querySelectorAll(".view-tab")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
  });
}

// Narrow screens: the sessions sidebar is a drawer.
function closeDrawer() {
  $("sessions").classList.remove("open");
  $("sessions-toggle").setAttribute("aria-expanded", "false");
}
$("sessions-toggle").addEventListener("click", () => {
  const open = $("sessions").classList.toggle("open");
  $("sessions-toggle").setAttribute("aria-expanded", String(open));
  if (open) $("new-session").focus();
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") closeDrawer();
});

// --- start ---------------------------------------------------------------------------------------

renderSessions();
client.connect();
client.subscribe({ types: ["*"], history: 300, currentState: true });
client.openSession({ sessionId: sessionStore.current }).catch(() => {});
input.focus();
