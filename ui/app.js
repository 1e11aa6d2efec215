// The Sluice console (docs/console.md). Plain JavaScript, served by sluiced
// itself under a Content-Security-Policy that allows only this file: no
// inline script, nothing from elsewhere. Everything the broker says is put
// on the page with textContent, never parsed as HTML.
"use strict";

const PAGE = 50;            // queues per page
const REFRESH_MS = 2000;    // how often the page asks again
const TOKEN_KEY = "sluice-token";

const state = {
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
  $("overview").hidden = true;
  $("token-prompt").hidden = false;
  $("token-error").textContent = problem;
  $("forget-token").hidden = true;
  $("token-input").focus();
}

function showOverview() {
  $("token-prompt").hidden = true;
  $("overview").hidden = false;
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

function render(answer) {
  const body = $("queues").tBodies[0];
  const rows = document.createDocumentFragment();
  for (const q of answer.queues) {
    const tr = document.createElement("tr");
    tr.dataset.queue = q.name;
    const m = q.messages || {};
    const cap = q.settings && q.settings.max_in_flight ? " / " + number(q.settings.max_in_flight) : "";
    cell(tr, q.name, "name");
    cell(tr, number(m.ready), "n ready");
    cell(tr, number(m.delayed), "n delayed");
    cell(tr, number(m.in_flight) + cap, "n in-flight");
    cell(tr, number(q.consumers), "n consumers");
    cell(tr, Math.round((q.pressure || 0) * 100) + " %", "n pressure");
    cell(tr, age(q.oldest_ready_age_ms), "n age");
    cell(tr, number(q.dead_letters), "n dead-letters");
    cell(tr, number(q.totals && q.totals.published), "n published");
    cell(tr, number(q.totals && q.totals.delivered), "n delivered");
    cell(tr, number(q.totals && q.totals.acked), "n acked");
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

async function refresh() {
  clearTimeout(state.timer);
  const after = state.cursors[state.cursors.length - 1];
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (after) query.set("after", after);
  if (state.filter) query.set("contains", state.filter);
  try {
    const answer = await api("/v1/queues?" + query.toString());
    showOverview();
    render(answer);
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e.message === "unauthenticated") return;
    $("status").textContent = "cannot reach the broker: " + e.message;
  }
  state.timer = setTimeout(refresh, REFRESH_MS);
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
  refresh();
}

document.addEventListener("DOMContentLoaded", start);
