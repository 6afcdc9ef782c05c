// The manager's page. Every value from the CRM, the PBX or the caller goes on the page
// through textContent (text(), cell()), never innerHTML: a caller name is text, not markup.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { me: null, csrf: sessionStorage.getItem("csrf"), ws: null, retry: 0, pop: null };

function text(id, value) { $(id).textContent = value == null ? "" : String(value); }

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value == null ? "" : String(value);
  row.appendChild(td);
  return td;
}

function status(msg) { text("status", msg); }

function timeOf(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function dateTimeOf(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const res = await fetch(path, { method, headers, credentials: "same-origin",
                                  body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.status === 401 && state.me) {  // the session ended (expired, daemon restarted): log in again
    sessionStorage.removeItem("csrf");
    location.reload();
  }
  if (!res.ok) {
    const err = new Error((data && data.error) || res.statusText);
    err.status = res.status;
    throw err;
  }
  return data;
}

// ------------------------------------------------------------------ login
async function login(event) {
  event.preventDefault();
  text("login-error", "");
  if (window.Notification && Notification.permission === "default") {
    try { Notification.requestPermission(); } catch (e) { /* not allowed here */ }
  }
  try {
    const out = await api("POST", "/login", { token: $("token").value });
    state.csrf = out.csrf_token;
    sessionStorage.setItem("csrf", state.csrf);
    $("token").value = "";
    start({ name: out.name, role: out.role, extension: out.extension });
  } catch (e) {
    text("login-error", "Login failed: " + e.message);
  }
}

async function logout() {
  try { await api("POST", "/logout"); } catch (e) { /* gone anyway */ }
  sessionStorage.removeItem("csrf");
  location.reload();
}

function start(me) {
  state.me = me;
  text("who", me.name + (me.extension ? " · " + me.extension : "") + " (" + me.role + ")");
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("logout").hidden = false;
  connect();
  refresh();
  setInterval(refresh, 60000);
}

// ------------------------------------------------------------------ pops
function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(proto + "//" + location.host + "/api/pops/ws");
  state.ws = ws;
  ws.onopen = () => { state.retry = 0; $("live").className = "badge on"; text("live", "live"); };
  ws.onmessage = (m) => { try { showPop(JSON.parse(m.data)); } catch (e) { status("bad pop: " + e.message); } };
  ws.onclose = () => {
    $("live").className = "badge off"; text("live", "offline");
    if (!state.me) return;
    state.retry = Math.min(state.retry + 1, 5);
    setTimeout(connect, 500 * state.retry);
  };
}

function showPop(pop) {
  const box = $("pop");
  if (pop.event === "ringing") {
    state.pop = pop;
  } else if (!state.pop || state.pop.call_id !== pop.call_id || state.pop.extension !== pop.extension) {
    if (pop.event === "ended") setTimeout(refresh, 1500);
    return;  // not the call on screen (joined mid-call, or staff watching several phones)
  }
  box.className = "card " + pop.event;
  $("pop-empty").hidden = true;
  $("pop-body").hidden = false;
  text("pop-event", pop.event === "ended" ? "ended (" + (pop.result || "") + ")" : pop.event);
  text("pop-at", timeOf(pop.at));
  if (pop.event !== "ringing") {
    if (pop.event === "ended") setTimeout(refresh, 1500);  // the call's record is written by then
    return;
  }
  const caller = pop.caller || {};
  text("pop-caller-name", caller.name || "");
  text("pop-caller-number", caller.number || caller.raw || "withheld");
  const card = pop.card;
  $("pop-card").hidden = !card;
  $("pop-no-card").hidden = !!card;
  if (card) {
    text("pop-client-name", card.name);
    text("pop-turnover", card.monthly_turnover == null ? "—" : card.monthly_turnover.toLocaleString());
    text("pop-tier", card.tier || "—");
    text("pop-owner", card.owner || "—");
    const route = pop.route;
    text("pop-route", route ? (route.reason || route.rule || "") + (route.trace && route.trace.length
         ? " — " + route.trace.join("; ") : "") : "—");
    text("pop-card-status", pop.card_status === "no-history" ? "History not available right now." : "");
    const body = $("pop-history").tBodies[0];
    body.replaceChildren();
    for (const c of card.recent_calls) {
      const tr = document.createElement("tr");
      cell(tr, dateTimeOf(c.started_at)); cell(tr, c.direction); cell(tr, c.outcome); cell(tr, c.agent || "");
      body.appendChild(tr);
    }
    const list = $("pop-callbacks");
    list.replaceChildren();
    for (const cb of card.open_callbacks) {
      const li = document.createElement("li");
      li.textContent = dateTimeOf(cb.created_at) + " · " + cb.reason + " · " + cb.assignee;
      list.appendChild(li);
    }
    const mine = state.me && state.me.role === "manager" && card.owner === state.me.extension;
    $("pop-call").hidden = !mine;
    $("pop-call").onclick = () => callClient(card.id);
  }
  notify(pop);
}

function notify(pop) {
  if (!window.Notification || Notification.permission !== "granted" || !document.hidden) return;
  const caller = pop.caller || {};
  const who = pop.card ? pop.card.name : (caller.name || caller.number || "unknown caller");
  try { new Notification("Call from " + who, { body: caller.number || "", tag: pop.call_id }); } catch (e) { /* */ }
}

// ------------------------------------------------------------------ lists
async function refresh() {
  await Promise.all([loadCallbacks(), loadCalls()]);
}

async function loadCallbacks() {
  try {
    const page = await api("GET", "/api/callbacks?status=open&limit=100");
    const body = $("callbacks-table").tBodies[0];
    body.replaceChildren();
    for (const cb of page.items) {
      const tr = document.createElement("tr");
      tr.dataset.id = String(cb.id);
      cell(tr, dateTimeOf(cb.call_started_at || cb.created_at));
      cell(tr, cb.client_id);
      cell(tr, cb.caller_number || "");
      cell(tr, cb.reason);
      const td = cell(tr, "");
      if (state.me.role === "manager" && cb.assignee_kind === "owner") {
        const call = document.createElement("button");
        call.textContent = "Call";
        call.className = "cb-call";
        call.onclick = () => callClient(cb.client_id);
        td.appendChild(call);
      }
      const done = document.createElement("button");
      done.textContent = "Done";
      done.className = "cb-done";
      done.onclick = async () => {
        try { await api("POST", "/api/callbacks/" + encodeURIComponent(cb.id) + "/done"); loadCallbacks(); }
        catch (e) { status("Could not mark done: " + e.message); }
      };
      td.appendChild(done);
      body.appendChild(tr);
    }
    $("callbacks-empty").hidden = page.items.length > 0;
  } catch (e) { status("Callbacks: " + e.message); }
}

async function loadCalls() {
  try {
    const midnight = new Date(); midnight.setHours(0, 0, 0, 0);
    const page = await api("GET", "/api/calls?limit=100&since=" + encodeURIComponent(midnight.toISOString()));
    const body = $("calls-table").tBodies[0];
    body.replaceChildren();
    for (const c of page.items) {
      const tr = document.createElement("tr");
      cell(tr, timeOf(c.started_at));
      cell(tr, c.direction);
      const p = c.direction === "out" ? c.callee : c.caller;
      cell(tr, (p.name ? p.name + " " : "") + (p.number || p.raw || ""));
      cell(tr, c.client_id || "");
      cell(tr, c.outcome);
      cell(tr, c.talk_seconds == null ? "" : Math.round(c.talk_seconds) + " s");
      body.appendChild(tr);
    }
    $("calls-empty").hidden = page.items.length > 0;
  } catch (e) { status("Calls: " + e.message); }
}

// ------------------------------------------------------------------ click-to-call
async function callClient(clientId) {
  try {
    const out = await api("POST", "/api/calls/originate", { client_id: clientId });
    status("Calling " + out.number + ": your phone rings first.");
  } catch (e) {
    status("Call failed: " + e.message);
  }
}

// ------------------------------------------------------------------ boot
document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  // a login link (`callrouter demo` prints one): /manager#token=…; a fragment never reaches
  // a server, and it leaves the address bar before anything else happens
  const link = /^#token=(.+)$/.exec(location.hash);
  if (link) {
    history.replaceState(null, "", location.pathname + location.search);
    try {
      const out = await api("POST", "/login", { token: decodeURIComponent(link[1]) });
      state.csrf = out.csrf_token;
      sessionStorage.setItem("csrf", state.csrf);
      start({ name: out.name, role: out.role, extension: out.extension });
      return;
    } catch (e) { text("login-error", "Login failed: " + e.message); }
  }
  if (state.csrf) {
    try { start(await api("GET", "/api/me")); return; } catch (e) { sessionStorage.removeItem("csrf"); }
  }
  $("login-view").hidden = false;
});
