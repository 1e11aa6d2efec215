// The Sluice console (docs/console.md). Plain JavaScript, served by sluiced
// itself under a Content-Security-Policy that allows only this file: no
// inline script, nothing from elsewhere. Everything the broker says is put
// on the page with textContent, never parsed as HTML.
"use strict";

const PAGE = 50;            // queues per page
const REFRESH_MS = 2000;    // how often the page asks again
const TOKEN_KEY = "sluice-token";

const state = {
  generation: 0,            // of the newest refresh: an older one's answer is dropped
  filter: "",
  cursors: [""],            // the "after" of each page seen, for Previous
  next: null,               // the "after" of the next page, if there is one
  timer: null,
};

const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

/// GET or POST to the API with the token; a 401 shows the token prompt.
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
  if (response.status === 401) {
    showPrompt(token() ? "That token is not valid here." : "");
    throw new Error("unauthenticated");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new Error((error.code || response.status) + ": " + (error.message || ""));
  }
  return body;
}

function showPrompt(problem) {
  clearTimeout(state.timer);
  for (const page of PAGES) $(page).hidden = true;
  $("token-prompt").hidden = false;
  $("token-error").textContent = problem;
  $("forget-token").hidden = true;
  $("token-input").focus();
}

const PAGES = ["overview", "queue-page", "dlq-page"];

function showPage(id) {
  $("token-prompt").hidden = true;
  for (const page of PAGES) $(page).hidden = page !== id;
  $("forget-token").hidden = !token();
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function age(ms) {
  if (!ms) return "–";
  if (ms < 1000) return ms + " ms";
  if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
  return Math.round(ms / 60000) + " min";
}

function number(n) {
  return typeof n === "number" ? n.toLocaleString("en") : "–";
}

/// Messages per second over the last 10 samples (one a second).
function rate(series) {
  const recent = series.slice(-10);
  if (recent.length === 0) return "–";
  const per = recent.reduce((a, b) => a + b, 0) / recent.length;
  return per >= 100 ? number(Math.round(per)) : per.toFixed(1);
}

/// An SVG line per series, each scaled to its own maximum.
function sparkline(series, colours) {
  const NS = "http://www.w3.org/2000/svg";
  const width = 150, height = 24;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("class", "sparkline");
  series.forEach((values, i) => {
    if (values.length < 2) return;
    const top = Math.max(1, ...values);
    const points = values.map((v, x) =>
        (x * (width - 2) / (values.length - 1) + 1).toFixed(1) + "," +
        (height - 2 - v * (height - 4) / top).toFixed(1));
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colours[i]);
    line.setAttribute("stroke-width", "1.5");
    svg.appendChild(line);
  });
  return svg;
}

function render(answer, history) {
  if (window.sluiceFirstRender === undefined) window.sluiceFirstRender = performance.now();
  const body = $("queues").tBodies[0];
  const rows = document.createDocumentFragment();
  for (const q of answer.queues) {
    const tr = document.createElement("tr");
    tr.dataset.queue = q.name;
    const m = q.messages || {};
    const cap = q.settings && q.settings.max_in_flight ? " / " + number(q.settings.max_in_flight) : "";
    const name = cell(tr, "", "name");
    const link = document.createElement("a");
    link.href = "#/queue/" + pathName(q.name);
    link.textContent = q.name;
    name.appendChild(link);
    cell(tr, number(m.ready), "n ready");
    cell(tr, number(m.delayed), "n delayed");
    cell(tr, number(m.in_flight) + cap, "n in-flight");
    cell(tr, number(q.consumers), "n consumers");
    cell(tr, Math.round((q.pressure || 0) * 100) + " %", "n pressure");
    cell(tr, age(q.oldest_ready_age_ms), "n age");
    cell(tr, number(q.dead_letters), "n dead-letters");
    const h = Object.hasOwn(history, q.name) ? history[q.name] : null;
    cell(tr, h ? rate(h.published) : "–", "n publish-rate");
    cell(tr, h ? rate(h.delivered) : "–", "n deliver-rate");
    cell(tr, h ? rate(h.acked) : "–", "n ack-rate");
    const spark = cell(tr, "", "spark");
    if (h) spark.appendChild(sparkline([h.depth, h.published], ["#1f6feb", "#1a7f37"]));
    if (q.pressure >= 0.8) tr.classList.add("pressed");
    rows.appendChild(tr);
  }
  body.replaceChildren(rows);
  $("empty").hidden = answer.queues.length !== 0;
  const first = (state.cursors.length - 1) * PAGE;
  $("count").textContent = answer.total === 0 ? "" :
      (first + 1) + "–" + (first + answer.queues.length) + " of " + number(answer.total) +
      " queues";
  state.next = answer.next || null;
  $("next").disabled = !state.next;
  $("prev").disabled = state.cursors.length <= 1;
}

/// The page the address names: #/, #/queue/NAME or #/queue/NAME/dlq.
function route() {
  const m = /^#\/queue\/([^/]+)(\/dlq)?$/.exec(location.hash);
  if (!m || m[1] === "." || m[1] === "..") return { page: "overview" };
  return { page: m[2] ? "dlq-page" : "queue-page", queue: decodeURIComponent(m[1]) };
}

/// Loads and draws the page the address names. A refresh started later (a
/// click, a keystroke, the timer) supersedes this one: each load checks, after
/// every answer, that it is still the newest before it draws anything.
async function refresh() {
  clearTimeout(state.timer);
  const generation = ++state.generation;
  const current = () => generation === state.generation;
  try {
    const where = route();
    if (where.page === "overview") await loadOverview(current);
    else if (where.page === "queue-page") await loadQueue(where.queue, current);
    else await loadDeadLetters(where.queue, current);
    if (!current()) return;
    showPage(where.page);
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (!current() || e.message === "unauthenticated") return;
    $("status").textContent = "cannot load the page: " + e.message;
  }
  state.timer = setTimeout(refresh, REFRESH_MS);
}

async function loadOverview(current) {
  const after = state.cursors[state.cursors.length - 1];
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (after) query.set("after", after);
  if (state.filter) query.set("contains", state.filter);
  const answer = await api("/v1/queues?" + query.toString());
  let history = {};
  if (answer.queues.length) {
    const names = new URLSearchParams();
    for (const q of answer.queues) names.append("queue", q.name);
    history = (await api("/v1/stats/history?" + names.toString())).queues;
  }
  if (current()) render(answer, history);
}

function start() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    refresh();
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showPrompt("");
  });
  let typing = null;
  $("filter").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.filter = $("filter").value.trim();
      state.cursors = [""];
      refresh();
    }, 200);
  });
  $("next").addEventListener("click", () => {
    if (!state.next) return;
    state.cursors.push(state.next);
    refresh();
  });
  $("prev").addEventListener("click", () => {
    if (state.cursors.length > 1) state.cursors.pop();
    refresh();
  });
  window.addEventListener("hashchange", () => {
    // A new page: its forms, ticks and messages start afresh.
    state.shown = null;
    chosen.clear();
    $("live-result").textContent = "";
    $("dlq-result").textContent = "";
    $("dlq-detail").hidden = true;
    refresh();
  });
  startQueuePage();
  startDeadLetters();
  refresh();
}

document.addEventListener("DOMContentLoaded", start);

// ---------------------------------------------------------------------------
// One queue: its counts, effective settings, triggers, and live settings.

// The live settings the form offers (the rest change by the config file).
const LIVE = ["dispatch_rate", "dispatch_burst", "max_in_flight", "max_consumer_rate",
              "ingress_rate", "ingress_burst", "key_rate", "key_burst", "max_messages",
              "max_bytes"];

/// Fills a two-column table from [name, value] pairs, as text.
function pairs(table, entries) {
  const rows = document.createDocumentFragment();
  for (const [name, value] of entries) {
    const tr = document.createElement("tr");
    cell(tr, name);
    cell(tr, typeof value === "object" ? JSON.stringify(value) : String(value));
    rows.appendChild(tr);
  }
  table.tBodies[0].replaceChildren(rows);
}

/// A queue name in a path: encodeURIComponent, ':' kept as it is.
function pathName(name) {
  return encodeURIComponent(name).replace(/%3A/gi, ":");
}

async function loadQueue(name, current) {
  const q = await api("/v1/queues/" + pathName(name));
  if (!current()) return;
  const admin = (q.can || []).includes("admin");
  $("q-name").textContent = q.name;
  $("q-dlq-link").href = "#/queue/" + pathName(q.name) + "/dlq";
  $("q-dlq-link").hidden = !admin;  // the dead-letter endpoints need admin
  const m = q.messages || {};
  pairs($("q-stats"), [
    ["ready", number(m.ready)], ["delayed", number(m.delayed)],
    ["in flight", number(m.in_flight)], ["held (resequencer)", number(m.held)],
    ["consumers", number(q.consumers)], ["pressure", Math.round((q.pressure || 0) * 100) + " %"],
    ["oldest ready", age(q.oldest_ready_age_ms)], ["dead letters", number(q.dead_letters)],
    ...Object.entries(q.totals || {}).map(([k, v]) => [k, number(v)])]);
  pairs($("q-settings"), Object.entries(q.settings || {}));
  const consumers = document.createDocumentFragment();
  for (const c of q.consumer_list || []) {
    const tr = document.createElement("tr");
    cell(tr, String(c.subscription), "n");
    cell(tr, number(c.in_flight) + " / " + number(c.credit), "n");
    cell(tr, c.rate ? c.rate + "/s" : "–", "n");
    cell(tr, c.draining ? "draining" : c.paused ? "paused" : "taking");
    consumers.appendChild(tr);
  }
  $("q-consumers").tBodies[0].replaceChildren(consumers);
  const keys = document.createDocumentFragment();
  for (const k of q.busiest_keys || []) {
    const tr = document.createElement("tr");
    cell(tr, k.key === "" ? "(no key)" : k.key, "name");
    cell(tr, number(k.ready), "n");
    cell(tr, number(k.held), "n");
    keys.appendChild(tr);
  }
  $("q-keys").tBodies[0].replaceChildren(keys);
  // The form is filled once per visit, so a refresh does not undo typing.
  $("live-form").hidden = !admin;
  if (!admin) state.shown = null;
  if (admin && state.shown !== q.name) {
    const fields = document.createDocumentFragment();
    for (const key of LIVE) {
      const label = document.createElement("label");
      label.textContent = key;
      const input = document.createElement("input");
      input.name = key;
      input.value = String(q.settings[key]);
      input.dataset.was = input.value;
      label.appendChild(input);
      fields.appendChild(label);
    }
    $("live-fields").replaceChildren(fields);
    state.shown = q.name;
  }
  await loadTriggers(q.name, current);
}

async function loadTriggers(queue, current) {
  let triggers = [];
  try {
    triggers = (await api("/v1/triggers")).triggers.filter((t) => t.queue === queue);
  } catch (e) {
    if (e.message === "unauthenticated") throw e;  // 403: this token may not see them
  }
  if (!current()) return;
  const rows = document.createDocumentFragment();
  for (const t of triggers) {
    const tr = document.createElement("tr");
    cell(tr, t.name);
    cell(tr, t.state);
    cell(tr, t.breaker);
    cell(tr, number(t.in_flight) + " / " + number(t.concurrency_limit), "n");
    cell(tr, t.latency_ms ? t.latency_ms.toFixed(1) + " ms" : "–", "n");
    cell(tr, number(t.messages_sent), "n");
    rows.appendChild(tr);
  }
  $("q-triggers").tBodies[0].replaceChildren(rows);
  $("q-triggers-none").hidden = triggers.length !== 0;
}

function startQueuePage() {
  $("live-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const changed = {};
    for (const input of $("live-fields").querySelectorAll("input"))
      if (input.value.trim() !== input.dataset.was) changed[input.name] = input.value.trim();
    if (Object.keys(changed).length === 0) {
      $("live-result").textContent = "Nothing changed.";
      return;
    }
    try {
      await api("/v1/queues/" + pathName(route().queue), {
        method: "PATCH", body: JSON.stringify(changed),
        headers: { "Content-Type": "application/json" } });
      $("live-result").textContent = "Applied: " + Object.keys(changed).join(", ");
      state.shown = null;
      refresh();
    } catch (e) {
      $("live-result").textContent = e.message;
    }
  });
}

// ---------------------------------------------------------------------------
// Dead letters: list, detail, redrive, delete, purge.

const chosen = new Set();  // entry ids ticked

function payloadText(entry) {
  if (typeof entry.payload === "string") return ["text", entry.payload];
  const bytes = atob(entry.payload_base64 || "");
  let hex = "";
  for (let i = 0; i < bytes.length; ++i) {
    hex += bytes.charCodeAt(i).toString(16).padStart(2, "0") + (i % 16 === 15 ? "\n" : " ");
  }
  return ["binary, in hex", hex];
}

async function loadDeadLetters(queue, current) {
  const q = await api("/v1/queues/" + pathName(queue));
  const list = await api("/v1/queues/" + pathName(queue) + "/dlq?limit=200&order=newest");
  if (!current()) return;
  $("dlq-name").textContent = queue;
  $("dlq-back").href = "#/queue/" + pathName(queue);
  $("dlq-actions").hidden = !(q.can || []).includes("admin");
  const reason = $("dlq-reason").value.trim();
  const minutes = Number($("dlq-age").value || 0);
  const now = Date.now();
  const shown = list.entries.filter((e) => (!reason || e.reason.includes(reason)) &&
      now - e.last_failure_at_ms >= minutes * 60000);
  // Only what is on the page can be ticked: a hidden entry is never acted on.
  const visibleIds = new Set(shown.map((e) => e.entry_id));
  for (const id of Array.from(chosen)) if (!visibleIds.has(id)) chosen.delete(id);
  const rows = document.createDocumentFragment();
  for (const e of shown) {
    const tr = document.createElement("tr");
    tr.dataset.entry = String(e.entry_id);
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = chosen.has(e.entry_id);
    box.addEventListener("click", (event) => {
      event.stopPropagation();
      if (box.checked) chosen.add(e.entry_id); else chosen.delete(e.entry_id);
    });
    cell(tr, "").appendChild(box);
    cell(tr, String(e.entry_id), "n entry");
    cell(tr, String(e.message_id), "n");
    cell(tr, String(e.attempts), "n");
    cell(tr, e.reason, "reason");
    cell(tr, age(now - e.last_failure_at_ms) + " ago", "n");
    cell(tr, e.correlation_id || "");
    tr.addEventListener("click", () => showEntry(queue, e.entry_id));
    rows.appendChild(tr);
  }
  $("dlq").tBodies[0].replaceChildren(rows);
  $("dlq-count").textContent = shown.length + " shown of " + number(list.total);
}

async function showEntry(queue, id) {
  let e;
  try {
    e = await api("/v1/queues/" + pathName(queue) + "/dlq/" + id);
  } catch (error) {
    $("dlq-result").textContent = error.message;
    return;
  }
  $("dlq-detail-id").textContent = String(e.entry_id);
  pairs($("dlq-headers"), Object.entries(e.headers || {}));
  const [kind, text] = payloadText(e);
  $("dlq-payload-kind").textContent = "(" + kind + ")";
  $("dlq-payload").textContent = text;
  $("dlq-detail").hidden = false;
}

async function dlqAction(path, method, body) {
  const queue = route().queue;
  try {
    const answer = await api("/v1/queues/" + pathName(queue) + "/dlq" + path, {
      method, body: body === undefined ? undefined : JSON.stringify(body),
      headers: { "Content-Type": "application/json" } });
    $("dlq-result").textContent = "Done: " + number(answer.affected) + " entries.";
    chosen.clear();
  } catch (e) {
    $("dlq-result").textContent = e.message;
  }
  refresh();
}

function startDeadLetters() {
  const rate = () => Number($("dlq-rate").value || 0);
  $("dlq-redrive-selected").addEventListener("click", () => {
    if (chosen.size === 0) return void ($("dlq-result").textContent = "Tick entries first.");
    const body = { ids: Array.from(chosen) };
    if (rate() > 0) body.rate = rate();
    dlqAction("/redrive", "POST", body);
  });
  $("dlq-redrive-filter").addEventListener("click", () => {
    const body = {};
    const reason = $("dlq-reason").value.trim();
    const minutes = Number($("dlq-age").value || 0);
    if (reason) body.reason = reason;
    if (minutes > 0) body.min_age_ms = Math.round(minutes * 60000);
    if (!reason && !minutes) {
      if (!confirm("No filter is set: redrive every dead letter of this queue?")) return;
      body.all = true;
    }
    if (rate() > 0) body.rate = rate();
    dlqAction("/redrive", "POST", body);
  });
  $("dlq-delete-selected").addEventListener("click", () => {
    if (chosen.size === 0) return void ($("dlq-result").textContent = "Tick entries first.");
    if (!confirm("Delete " + chosen.size + " dead letters for good?")) return;
    dlqAction("/delete", "POST", { ids: Array.from(chosen) });
  });
  $("dlq-purge").addEventListener("click", () => {
    if (!confirm("Purge every dead letter of " + route().queue + "? This cannot be undone.")) return;
    dlqAction("", "DELETE");
  });
  for (const id of ["dlq-reason", "dlq-age"]) $(id).addEventListener("input", () => refresh());
}
