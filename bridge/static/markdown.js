/**
 * A small, safe Markdown renderer: text in, DOM nodes out.
 *
 * Model output and event payloads are untrusted, so nothing here parses HTML: every piece of text
 * becomes a Text node (textContent), elements are created by name from a fixed list, and the only
 * attribute taken from the input is a link's href, kept only when it is an absolute http(s) URL.
 *
 * Supported: paragraphs, hard line breaks, # headings, - / * / 1. lists, > quotes, ``` code blocks,
 * `code`, **bold**, *italic* / _italic_, [links](https://…) and bare https:// URLs.
 */

const SAFE_PROTOCOLS = new Set(["http:", "https:"]);

/** An absolute http(s) URL, normalised, or null for anything else (javascript:, data:, relative…). */
export function safeHref(raw) {
  const text = String(raw || "").trim();
  if (!/^https?:\/\//i.test(text)) return null;
  try {
    const url = new URL(text);
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function el(doc, name, className) {
  const node = doc.createElement(name);
  if (className) node.className = className;
  return node;
}

function link(doc, href, label) {
  const a = el(doc, "a");
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  a.textContent = label;
  return a;
}

// One regex per inline construct; the earliest match in the remaining text wins.
const INLINE = [
  ["code", /`([^`\n]+)`/],
  ["link", /\[([^\]\n]+)\]\(([^)\s]+)\)/],
  ["bold", /\*\*([^*\n]+?)\*\*|__([^_\n]+?)__/],
  ["italic", /\*([^*\s][^*\n]*?)\*|(?<![\w])_([^_\n]+?)_(?![\w])/],
  ["url", /https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"]/],
];

/** Append `text`'s inline Markdown to `parent` as nodes. */
export function renderInline(doc, parent, text, depth = 0) {
  let rest = text;
  while (rest.length > 0) {
    let best = null;
    for (const [kind, re] of INLINE) {
      const match = re.exec(rest);
      if (match && (best === null || match.index < best.match.index)) best = { kind, match };
    }
    if (best === null || depth > 4) {
      parent.appendChild(doc.createTextNode(rest));
      return;
    }
    const { kind, match } = best;
    if (match.index > 0) parent.appendChild(doc.createTextNode(rest.slice(0, match.index)));
    if (kind === "code") {
      const code = el(doc, "code");
      code.textContent = match[1];
      parent.appendChild(code);
    } else if (kind === "link") {
      const href = safeHref(match[2]);
      if (href) parent.appendChild(link(doc, href, match[1]));
      else parent.appendChild(doc.createTextNode(match[0])); // shown as typed, never made live
    } else if (kind === "url") {
      const href = safeHref(match[0]);
      parent.appendChild(href ? link(doc, href, match[0]) : doc.createTextNode(match[0]));
    } else {
      const node = el(doc, kind === "bold" ? "strong" : "em");
      renderInline(doc, node, match[1] ?? match[2], depth + 1);
      parent.appendChild(node);
    }
    rest = rest.slice(match.index + match[0].length);
  }
}

function appendLines(doc, parent, lines) {
  lines.forEach((line, i) => {
    if (i > 0) parent.appendChild(el(doc, "br"));
    renderInline(doc, parent, line);
  });
}

const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*\d{1,9}[.)]\s+(.*)$/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const FENCE = /^\s*```/;
const QUOTE = /^\s*>\s?(.*)$/;

/**
 * Render Markdown into a DocumentFragment. An unclosed ``` block (an answer still streaming) is
 * shown as code so far.
 */
export function renderMarkdown(text, doc = document) {
  const fragment = doc.createDocumentFragment();
  const lines = String(text ?? "").replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "") {
      i += 1;
      continue;
    }
    if (FENCE.test(line)) {
      const body = [];
      i += 1;
      while (i < lines.length && !FENCE.test(lines[i])) body.push(lines[i++]);
      i += 1;
      const pre = el(doc, "pre");
      const code = el(doc, "code");
      code.textContent = body.join("\n");
      pre.appendChild(code);
      fragment.appendChild(pre);
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      // Answers sit inside the chat: headings are kept small (h3..h6).
      const level = Math.min(6, heading[1].length + 2);
      const h = el(doc, `h${level}`);
      renderInline(doc, h, heading[2]);
      fragment.appendChild(h);
      i += 1;
      continue;
    }
    if (BULLET.test(line) || NUMBERED.test(line)) {
      const ordered = !BULLET.test(line);
      const pattern = ordered ? NUMBERED : BULLET;
      const list = el(doc, ordered ? "ol" : "ul");
      while (i < lines.length && pattern.test(lines[i])) {
        const item = el(doc, "li");
        renderInline(doc, item, pattern.exec(lines[i])[1]);
        list.appendChild(item);
        i += 1;
      }
      fragment.appendChild(list);
      continue;
    }
    if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) quoted.push(QUOTE.exec(lines[i++])[1]);
      const quote = el(doc, "blockquote");
      appendLines(doc, quote, quoted);
      fragment.appendChild(quote);
      continue;
    }
    const paragraph = [];
    while (
      i < lines.length &&
      lines[i].trim() !== "" &&
      !FENCE.test(lines[i]) &&
      !HEADING.test(lines[i]) &&
      !BULLET.test(lines[i]) &&
      !NUMBERED.test(lines[i]) &&
      !QUOTE.test(lines[i])
    ) {
      paragraph.push(lines[i++]);
    }
    const p = el(doc, "p");
    appendLines(doc, p, paragraph);
    fragment.appendChild(p);
  }
  return fragment;
}
