/**
 * The conversation view: user messages, streamed answers (safe Markdown), tool calls inline with
 * their arguments, result and duration, memory recalls as small citations, and turn timings.
 */

import { eventPayload } from "./coda-client.js";
import { renderMarkdown } from "./markdown.js";

function element(name, className, text) {
  const node = document.createElement(name);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function ms(value) {
  const n = Number(value || 0);
  return n >= 1000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n)} ms`;
}

function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return String(text ?? "");
  }
}

function compactArgs(text) {
  try {
    const value = JSON.parse(text || "{}");
    if (value && typeof value === "object" && !Array.isArray(value)) {
      return Object.entries(value)
        .map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
        .join(", ");
    }
    return JSON.stringify(value);
  } catch {
    return String(text ?? "");
  }
}

/** One assistant answer: citations, then text segments and tool cards in the order they happened. */
class AnswerView {
  constructor(chat, turnId) {
    this.chat = chat;
    this.turnId = turnId;
    this.root = element("article", "msg assistant thinking");
    this.root.dataset.turn = turnId;
    this.citations = element("div", "citations");
    this.citations.hidden = true;
    this.body = element("div", "body");
    this.meta = element("div", "meta");
    this.root.append(this.citations, this.body, this.meta);
    this.segment = null; // the text segment tokens go to
    this.text = "";
    this.streamed = "";
    this.tools = new Map();
    this.done = false;
    this._frame = 0;
  }

  _segment() {
    if (!this.segment) {
      this.segment = { el: element("div", "answer streaming"), text: "" };
      this.body.append(this.segment.el);
    }
    return this.segment;
  }

  token(text) {
    this.root.classList.remove("thinking");
    const segment = this._segment();
    segment.text += text;
    this.streamed += text;
    // Re-render the segment at most once a frame: tokens can arrive faster than paints.
    if (!this._frame) {
      this._frame = requestAnimationFrame(() => {
        this._frame = 0;
        this._paint(segment);
      });
    }
  }

  _paint(segment) {
    const stick = this.chat.nearBottom();
    segment.el.replaceChildren(renderMarkdown(segment.text));
    if (stick) this.chat.scrollToEnd();
  }

  citation(payload) {
    const ids = payload.memoryIds || [];
    if (ids.length === 0) return;
    this.citations.hidden = false;
    const scores = payload.scores || [];
    ids.forEach((id, i) => {
      const chip = element("span", "citation", `memory ${id.slice(0, 8)}`);
      chip.title = `recalled memory ${id}${scores[i] !== undefined ? ` (score ${Number(scores[i]).toFixed(2)})` : ""}`;
      chip.dataset.memory = id;
      this.citations.append(chip);
    });
  }

  toolStarted(payload) {
    if (this.tools.has(payload.callId)) return this.tools.get(payload.callId);
    this.root.classList.remove("thinking");
    if (this.segment) {
      this.segment.el.classList.remove("streaming");
      this.segment = null; // text after the tool goes below it
    }
    const details = element("details", "tool");
    details.dataset.tool = payload.name || "";
    details.dataset.call = payload.callId || "";
    const summary = element("summary");
    const status = element("span", "tool-status running", "running…");
    summary.append(
      element("span", "tool-name", payload.name || "tool"),
      element("span", "tool-args", compactArgs(payload.argumentsJson)),
      status,
    );
    const facts = element("dl");
    const argsPre = element("pre", "", prettyJson(payload.argumentsJson || "{}"));
    const resultPre = element("pre", "", "…");
    facts.append(element("dt", "", "arguments"), wrap(argsPre), element("dt", "", "result"), wrap(resultPre));
    details.append(summary, facts);
    this.body.append(details);
    const view = { details, status, resultPre };
    this.tools.set(payload.callId, view);
    this.chat.scrollIfNear();
    return view;
  }

  toolProgress(payload) {
    const view = this.tools.get(payload.callId);
    if (view) view.status.textContent = payload.message || "running…";
  }

  toolResult(payload) {
    const view = this.tools.get(payload.callId) || this.toolStarted(payload);
    view.status.className = "tool-status ok";
    view.status.textContent = `✓ ${ms(payload.durationMs)}`;
    view.resultPre.textContent = prettyJson(payload.resultJson);
  }

  toolError(payload) {
    const view = this.tools.get(payload.callId) || this.toolStarted(payload);
    view.status.className = "tool-status bad";
    const code = String(payload.code || "").replace("TOOL_ERROR_CODE_", "").toLowerCase();
    view.status.textContent = `✗ ${code}${payload.durationMs ? ` · ${ms(payload.durationMs)}` : ""}`;
    view.resultPre.textContent = `${payload.message || "failed"}${payload.field ? ` (at ${payload.field})` : ""}`;
  }

  failure(message) {
    this.root.classList.remove("thinking");
    const note = element("p", "system-note bad", message);
    this.body.append(note);
  }

  finish(payload) {
    this.done = true;
    this.root.classList.remove("thinking");
    // An answer seen only at its end (e.g. tokens missed) still shows in full.
    if (!this.streamed && payload.assistantText) this.token(payload.assistantText);
    if (this.segment) {
      const segment = this.segment;
      cancelAnimationFrame(this._frame);
      this._frame = 0;
      this._paint(segment);
      segment.el.classList.remove("streaming");
    }
    const timings = payload.timings || {};
    const facts = [];
    if (payload.provider) facts.push(payload.provider);
    if (timings.sttMs) facts.push(`speech ${ms(timings.sttMs)}`);
    if (timings.firstTokenMs) facts.push(`first token ${ms(timings.firstTokenMs)}`);
    if (timings.firstAudioMs) facts.push(`first audio ${ms(timings.firstAudioMs)}`);
    if (timings.totalMs) facts.push(`total ${ms(timings.totalMs)}`);
    for (const fact of facts) this.meta.append(element("span", "", fact));
    if (payload.interrupted) this.interrupted("interrupted");
    if (!this.body.childElementCount) this.body.append(element("p", "muted", "(no answer)"));
  }

  interrupted(reason) {
    if (this.meta.querySelector(".badge")) return;
    this.root.classList.remove("thinking");
    if (this.segment) this.segment.el.classList.remove("streaming");
    const text = { barge_in: "interrupted by you", cancel: "stopped", new_turn: "superseded", disconnect: "connection lost" };
    this.meta.append(element("span", "badge", text[reason] || reason || "interrupted"));
  }

  speaking(on) {
    let icon = this.meta.querySelector(".speaking");
    if (on && !icon) {
      icon = element("span", "speaking", "speaking…");
      this.meta.prepend(icon);
    } else if (!on && icon) {
      icon.remove();
    }
  }
}

function wrap(child) {
  const dd = element("dd");
  dd.append(child);
  return dd;
}

export class ChatView {
  constructor({ container, welcome }) {
    this.container = container;
    this.welcome = welcome;
    this.answers = new Map();
    this.users = new Map();
  }

  nearBottom() {
    const c = this.container;
    return c.scrollTop + c.clientHeight >= c.scrollHeight - 80;
  }

  scrollToEnd() {
    this.container.scrollTop = this.container.scrollHeight;
  }

  scrollIfNear() {
    if (this.nearBottom()) this.scrollToEnd();
  }

  _append(node) {
    const stick = this.nearBottom();
    this.welcome.hidden = true;
    this.container.append(node);
    if (stick) this.scrollToEnd();
  }

  clear() {
    this.answers.clear();
    this.users.clear();
    this.container.replaceChildren(this.welcome);
    this.welcome.hidden = false;
  }

  /** A previous session's turns (memory.Turn: turnId, userText, assistantText, interrupted). */
  showHistory(turns) {
    for (const turn of turns || []) {
      const id = turn.turnId || `h-${this.users.size}`;
      if (turn.userText) this.user(id, turn.userText, "");
      const answer = this.answer(id);
      answer.finish({ assistantText: turn.assistantText || "", interrupted: turn.interrupted });
    }
    this.scrollToEnd();
  }

  /** The user's message of a turn (created or updated). `via` is "", "typed" or "spoken". */
  user(turnId, text, via = "typed", pending = false) {
    let view = this.users.get(turnId);
    if (!view) {
      const root = element("article", "msg user");
      root.dataset.turn = turnId;
      const bubble = element("div", "bubble");
      root.append(bubble);
      if (via === "spoken") root.append(element("span", "via", "spoken"));
      view = { root, bubble };
      this.users.set(turnId, view);
      // A spoken question can be recognised after its answer view exists: keep the order.
      const answer = this.answers.get(turnId);
      if (answer) this.container.insertBefore(root, answer.root);
      else this._append(root);
    }
    view.bubble.textContent = text;
    view.root.classList.toggle("pending", pending);
    return view;
  }

  dropUser(turnId) {
    this.users.get(turnId)?.root.remove();
    this.users.delete(turnId);
  }

  answer(turnId) {
    let view = this.answers.get(turnId);
    if (!view) {
      view = new AnswerView(this, turnId);
      this.answers.set(turnId, view);
      this._append(view.root);
    }
    return view;
  }

  note(text, bad = false) {
    this._append(element("p", `system-note${bad ? " bad" : ""}`, text));
  }

  /** One event of this connection's conversation. */
  onTurnEvent(type, event) {
    const turnId = event.correlationId;
    const p = eventPayload(event);
    if (!turnId) return;
    switch (type) {
      case "memory.retrieved":
        this.answer(turnId).citation(p);
        break;
      case "llm.token":
        this.answer(turnId).token(p.text || "");
        break;
      case "tool.call_started":
        this.answer(turnId).toolStarted(p);
        break;
      case "tool.progress":
        this.answer(turnId).toolProgress(p);
        break;
      case "tool.result":
        this.answer(turnId).toolResult(p);
        break;
      case "tool.error":
        this.answer(turnId).toolError(p);
        break;
      case "llm.error":
        this.answer(turnId).failure(`The model failed: ${p.message || p.code || "unknown error"}`);
        break;
      case "conversation.turn":
        this.answer(turnId).finish(p);
        break;
      case "conversation.interrupted":
        if (this.answers.has(turnId)) this.answers.get(turnId).interrupted(p.reason);
        break;
      case "conversation.announcement":
        this.note(p.text || "");  // said unprompted, e.g. a timer set in this session went off
        break;
      default:
        break;
    }
  }
}
