"use strict";
const $ = (id) => document.getElementById(id);
let nextBefore = null;
const mine = new Set();

function fmtTime(ms) {
  try { return new Date(ms).toLocaleString(); } catch { return ""; }
}

function render(msgs, append) {
  const list = $("messages");
  if (!append) list.textContent = "";
  for (const m of msgs) {
    const li = document.createElement("li");
    li.dataset.id = m.id;
    if (mine.has(m.id)) li.className = "mine";
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = `${m.author} · ${fmtTime(m.created_at)} · posted via ${m.app}`;
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = m.text;
    li.append(meta, text);
    list.append(li);
  }
}

async function load(append) {
  const q = append && nextBefore ? `?limit=20&before=${nextBefore}` : "?limit=20";
  try {
    const r = await fetch(`/api/messages${q}`, { headers: { "Accept": "application/json" } });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    render(body.messages, append);
    nextBefore = body.next_before;
    $("more").hidden = !nextBefore;
    const served = $("served");
    served.textContent = "";
    served.append("Answered by ");
    const app = document.createElement("b"); app.id = "served-app"; app.textContent = body.served_by;
    served.append(app, ", read from database node ");
    const db = document.createElement("b"); db.id = "served-db"; db.textContent = body.db_node;
    served.append(db, ` (applied index ${body.db_applied_index}${body.read_your_writes ? ", waited for your write " + body.read_your_writes : ""}).`);
  } catch (e) {
    $("served").textContent = `Could not load messages: ${e.message}`;
  }
}

// A fresh Idempotency-Key per message. randomUUID exists only in secure
// contexts (https, localhost); elsewhere build a version-4 UUID from
// getRandomValues.
function newKey() {
  const c = window.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const b = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// The message being sent, kept until it is saved: every resend of it (the
// page's own retries below, or the user pressing the button again after a
// failure) carries the same Idempotency-Key, so it is stored once.
let pending = null;
const RETRY_DELAYS_MS = [500, 1000, 2000];
const RETRY_STATUSES = new Set([502, 503, 504]);
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function sendPost(p, status) {
  for (let attempt = 0; ; attempt++) {
    let r = null;
    let failure;
    try {
      r = await fetch("/api/messages", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json", "Idempotency-Key": p.key },
        body: JSON.stringify({ author: p.author, text: p.text }),
      });
    } catch (e) {
      failure = e;
    }
    if ((failure || RETRY_STATUSES.has(r.status)) && attempt < RETRY_DELAYS_MS.length) {
      status.textContent = "Sending… (retrying)";
      await pause(RETRY_DELAYS_MS[attempt]);
      continue;
    }
    if (failure) throw failure;
    const text = await r.text();
    let body = {};
    try { body = JSON.parse(text); } catch { body = { error: text.trim() }; }
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }
}

$("post").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const status = $("status");
  const send = $("send");
  send.disabled = true;
  status.className = ""; status.textContent = "Sending…";
  const author = $("author").value, text = $("text").value;
  if (!pending || pending.author !== author || pending.text !== text) {
    pending = { author, text, key: newKey() };
  }
  try {
    const body = await sendPost(pending, status);
    pending = null;
    mine.add(body.message.id);
    $("text").value = "";
    status.className = "ok";
    status.textContent = `Saved by ${body.served_by} (write ${body.token}).`;
    await load(false);
  } catch (e) {
    status.className = "error";
    status.textContent = `Not saved: ${e.message}`;
  } finally {
    send.disabled = false;
  }
});
$("more").addEventListener("click", () => load(true));
load(false);
setInterval(() => { if (!document.hidden) load(false); }, 5000);
