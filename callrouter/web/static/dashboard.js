// The supervisor dashboard. Plain JS, no build step; charts by the vendored uPlot.
// Every value from the API reaches the page through textContent (never innerHTML), so
// a client's name cannot become markup. Auth: POST /login sets the session cookie; the
// CSRF token it answers is kept in memory for the few writes (targets).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { csrf: null, me: null, tz: "UTC", charts: {}, liveTimer: null, autoTimer: null };
const LIVE_EVERY_MS = 5000;
const AUTO_EVERY_MS = 10000;  // "every 10 s": statistics and call list (a wall display; the demo's link, ?auto=1)

async function api(path, opts = {}) {
  const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
  if (opts.body !== undefined) {
    headers["Content-Type"] = "application/json";
    if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
  }
  const resp = await fetch(path, {
    method: opts.method || "GET", headers, credentials: "same-origin",
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  if (resp.status === 401 && path !== "/login") { showLogin(); throw new Error("log in again"); }
  const data = resp.status === 204 ? null : await resp.json();
  if (!resp.ok) throw new Error((data && data.error) || resp.statusText);
  return data;
}

// ---------------------------------------------------------------- small helpers
function cell(tr, value) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "" : String(value);
  tr.appendChild(td);
  return td;
}

function fill(tableId, rows, render) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    render(tr, r);
    body.appendChild(tr);
  }
}

function when(iso) {
  if (!iso) return "";
  return new Intl.DateTimeFormat("sv-SE", {
    timeZone: state.tz, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
  }).format(new Date(iso));
}

const num = (v, digits = 1) => (v === null || v === undefined ? "" : Number(v).toFixed(digits));

function bar(tr, share) {
  const td = document.createElement("td");
  const p = document.createElement("progress");
  p.max = 1;
  p.value = share === null ? 0 : Math.min(share, 1);
  p.title = share === null ? "no target" : Math.round(share * 100) + "%";
  td.appendChild(p);
  tr.appendChild(td);
}

function periodQuery() {
  const q = new URLSearchParams({ period: $("period").value });
  if ($("date").value) q.set("date", $("date").value);
  return q;
}

function csvLink(id, path, q) {
  const c = new URLSearchParams(q);
  c.set("format", "csv");
  $(id).href = path + "?" + c.toString();
}

function showError(e) { $("error").textContent = e ? String(e.message || e) : ""; }

// ---------------------------------------------------------------- login
function showLogin() {
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login-box").hidden = false;
  if (state.liveTimer) clearInterval(state.liveTimer);
  state.me = null;
  autoRefresh();
}

async function start(me) {
  state.me = me;
  $("who").textContent = me.name + " (" + me.role + (me.extension ? ", " + me.extension : "") + ")";
  $("login-box").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  for (const el of document.querySelectorAll(".staff")) el.hidden = me.role === "manager";
  await refresh();
  autoRefresh();
  if (me.role !== "manager") {
    await live();
    state.liveTimer = setInterval(() => live().catch(showError), LIVE_EVERY_MS);
  } else {
    $("live").hidden = true;
  }
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    const out = await api("/login", { method: "POST", body: { token: $("token").value.trim() } });
    state.csrf = out.csrf_token;
    $("token").value = "";
    await start(out);
  } catch (e) {
    $("login-error").textContent = String(e.message || e);
  }
});

$("logout").addEventListener("click", async () => {
  try { await api("/logout", { method: "POST", body: {} }); } finally { showLogin(); }
});

// ---------------------------------------------------------------- statistics
function statsRow(tr, r) {
  cell(tr, r.key === null ? "(none)" : r.key);
  for (const k of ["inbound", "inbound_answered", "missed", "abandoned", "outbound"]) cell(tr, r[k]);
}

async function stats() {
  const q = periodQuery();
  const m = await api("/api/stats/managers?" + q);
  state.tz = m.period.timezone;
  state.period = m.period;
  $("period-label").textContent = m.period.label + " (" + m.period.timezone + ")";
  const t = m.team;
  const figures = $("team");
  figures.replaceChildren();
  for (const [label, value] of [
    ["inbound", t.inbound], ["answered", t.inbound_answered], ["missed", t.missed], ["abandoned", t.abandoned],
    ["outbound", t.outbound], ["avg ring s", num(t.ring_avg_seconds)], ["talk min", num(t.talk_total_seconds / 60)],
    ["called back", t.callbacks_done], ["not called back", t.callbacks_open]]) {
    const div = document.createElement("div");
    const b = document.createElement("b");
    b.textContent = String(value);
    const s = document.createElement("span");
    s.textContent = label;
    div.append(b, s);
    figures.appendChild(div);
  }
  fill("managers", m.items, (tr, r) => {
    cell(tr, r.key); cell(tr, r.name);
    for (const k of ["inbound", "inbound_answered", "missed", "abandoned", "outbound", "outbound_answered"]) cell(tr, r[k]);
    cell(tr, num(r.ring_avg_seconds)); cell(tr, num(r.talk_total_seconds / 60));
    cell(tr, r.callbacks_done); cell(tr, r.callbacks_open); cell(tr, r.deals); cell(tr, num(r.calls_per_deal));
  });
  csvLink("csv-managers", "/api/stats/managers", q);
  const [tiers, queues, hours, days] = await Promise.all([
    api("/api/stats/tiers?" + q), api("/api/stats/queues?" + q), api("/api/stats/hours?" + q),
    api("/api/stats/days?" + q)]);
  fill("tiers", tiers.items, statsRow);
  fill("queues", queues.items, statsRow);
  csvLink("csv-tiers", "/api/stats/tiers", q);
  csvLink("csv-queues", "/api/stats/queues", q);
  drawHours(hours.items);
  drawDays(days.items);
}

function chart(id, opts, data) {
  if (state.charts[id]) state.charts[id].destroy();
  const el = $(id);
  const width = Math.max(300, el.clientWidth || 480);
  state.charts[id] = new uPlot(Object.assign({ width, height: 220 }, opts), data, el);
}

const SERIES = [
  { label: "inbound", stroke: "#1f6feb", fill: "rgba(31,111,235,0.25)" },
  { label: "answered", stroke: "#2da44e" },
  { label: "missed", stroke: "#cf222e" },
  { label: "outbound", stroke: "#8250df" },
];

function drawHours(items) {
  const xs = items.map((h) => Number(h.key));
  const bars = uPlot.paths.bars({ size: [0.7, 40] });
  chart("chart-hours", {
    scales: { x: { time: false, range: () => [-0.5, 23.5] } },
    axes: [{ label: "hour", incrs: [1, 2, 3, 6] }, {}],
    series: [{ label: "hour" }, Object.assign({ paths: bars }, SERIES[0]), SERIES[1], SERIES[2], SERIES[3]],
  }, [xs, items.map((h) => h.inbound), items.map((h) => h.answered), items.map((h) => h.missed),
      items.map((h) => h.outbound)]);
}

function drawDays(items) {
  // x: local midnight of each day as epoch seconds (uPlot formats in the browser's zone)
  const xs = items.map((d) => Date.parse(d.key + "T00:00:00Z") / 1000);
  const bars = uPlot.paths.bars({ size: [0.7, 40] });
  chart("chart-days", {
    // half a day either side: a one-day period is one bar, not a point lost in years of axis
    scales: { x: { range: (u, min, max) => [min - 43200, max + 43200] } },
    series: [{}, Object.assign({ paths: bars }, SERIES[0]), SERIES[1], SERIES[2], SERIES[3]],
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "UTC"),
  }, [xs, items.map((d) => d.inbound), items.map((d) => d.answered), items.map((d) => d.missed),
      items.map((d) => d.outbound)]);
}

// ---------------------------------------------------------------- targets
function thisMonth() {
  const d = $("date").value || new Date().toISOString().slice(0, 10);
  return d.slice(0, 7);
}

async function targets() {
  const month = thisMonth();
  const rows = await api("/api/targets?month=" + month);
  fill("targets", rows, (tr, r) => {
    cell(tr, r.manager);
    cell(tr, r.calls + " / " + (r.calls_target ?? "–")); bar(tr, r.calls_progress);
    cell(tr, num(r.talk_minutes) + " / " + (r.talk_minutes_target ?? "–")); bar(tr, r.talk_minutes_progress);
    cell(tr, r.deals + " / " + (r.deals_target ?? "–")); bar(tr, r.deals_progress);
  });
  csvLink("csv-targets", "/api/targets", new URLSearchParams({ month }));
}

$("target-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const val = (id) => ($(id).value === "" ? null : Number($(id).value));
  try {
    await api("/api/targets/" + thisMonth() + "/" + encodeURIComponent($("t-ext").value.trim()), {
      method: "PUT", body: { calls: val("t-calls"), talk_minutes: val("t-talk"), deals: val("t-deals") } });
    await targets();
    showError(null);
  } catch (e) { showError(e); }
});

// ---------------------------------------------------------------- calls and recordings
function callQuery() {
  const q = new URLSearchParams({ limit: "200" });
  const m = state.period;
  if (m) { q.set("since", m.since); q.set("until", m.until); }
  for (const [id, key] of [["f-manager", "manager"], ["f-client", "client"], ["f-outcome", "outcome"],
    ["f-direction", "direction"]]) {
    const v = $(id).value.trim();
    if (v) q.set(key, v);
  }
  return q;
}

function play(c) {
  const player = $("player");
  player.src = "/api/calls/" + encodeURIComponent(c.pbx) + "/" + encodeURIComponent(c.call_id) + "/recording";
  $("playing").textContent = c.call_id;
  player.play().catch(showError);
}

async function calls() {
  const q = callQuery();
  const page = await api("/api/calls?" + q);
  fill("calls", page.items, (tr, c) => {
    tr.dataset.callId = c.call_id;
    cell(tr, when(c.started_at)); cell(tr, c.direction);
    cell(tr, c.caller.number || c.caller.raw); cell(tr, c.callee.number || c.callee.raw);
    cell(tr, c.client_id); cell(tr, c.outcome); cell(tr, c.final_agent || c.answered_by);
    cell(tr, num(c.ring_seconds)); cell(tr, num(c.talk_seconds));
    const td = cell(tr, "");
    if (c.recording) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "play";
      b.textContent = "▶ play";
      b.addEventListener("click", () => play(c));
      const a = document.createElement("a");
      a.href = "/api/calls/" + encodeURIComponent(c.pbx) + "/" + encodeURIComponent(c.call_id) + "/recording?download=true";
      a.textContent = "download";
      td.append(b, " ", a);
    }
  });
  csvLink("csv-calls", "/api/calls", q);
}

$("call-filter").addEventListener("submit", (ev) => {
  ev.preventDefault();
  calls().then(() => showError(null), showError);
});

// ---------------------------------------------------------------- lists
async function lists() {
  const days = $("nc-days").value || "30";
  const nc = await api("/api/stats/not-contacted?limit=200&days=" + encodeURIComponent(days));
  fill("not-contacted", nc.items, (tr, r) => {
    cell(tr, r.client_id); cell(tr, r.name); cell(tr, r.owner_extension); cell(tr, r.tier);
    cell(tr, r.last_contact ? when(r.last_contact) : "never");
  });
  csvLink("csv-nc", "/api/stats/not-contacted", new URLSearchParams({ days }));
  const q = periodQuery();
  q.set("limit", "200");
  const ncb = await api("/api/stats/not-called-back?" + q);
  fill("not-called-back", ncb.items, (tr, c) => {
    cell(tr, when(c.started_at)); cell(tr, c.caller.number || c.caller.raw); cell(tr, c.client_id);
    cell(tr, c.outcome); cell(tr, c.legs.map((l) => l.agent || l.device).join(", "));
  });
  csvLink("csv-ncb", "/api/stats/not-called-back", periodQuery());
}

$("nc-days").addEventListener("change", () => lists().catch(showError));

// ---------------------------------------------------------------- live
async function live() {
  const l = await api("/api/live");
  fill("live-calls", l.calls, (tr, c) => {
    cell(tr, c.pbx); cell(tr, when(c.started_at)); cell(tr, c.caller_name ? c.caller + " " + c.caller_name : c.caller);
    cell(tr, c.ringing.join(", ")); cell(tr, c.answered ? "yes" : "no");
  });
  fill("presence", l.managers, (tr, m) => {
    cell(tr, m.extension); cell(tr, m.name); cell(tr, m.state).className = "state-" + m.state; cell(tr, m.dnd ? "DND" : "");
  });
}

// ---------------------------------------------------------------- everything
let generation = 0;

async function refresh() {
  const mine = ++generation;   // a newer refresh supersedes this one
  document.body.dataset.ready = "no";
  showError(null);
  try {
    await stats();  // sets state.period, which the call list's range follows
    await Promise.all([targets(), calls(), lists()]);
    if (mine === generation) document.body.dataset.ready = "yes";  // all drawn (tests wait for it)
  } catch (e) { showError(e); }
}

$("refresh").addEventListener("click", () => refresh());

function autoRefresh() {
  if (state.autoTimer) clearInterval(state.autoTimer);
  state.autoTimer = null;
  if ($("auto").checked && state.me) {
    state.autoTimer = setInterval(() => { if (!document.hidden) refresh(); }, AUTO_EVERY_MS);
  }
}
$("auto").checked = new URLSearchParams(location.search).get("auto") === "1";
$("auto").addEventListener("change", autoRefresh);
$("period").addEventListener("change", () => refresh());
$("date").addEventListener("change", () => refresh());

// a login link (`callrouter demo` prints one): /dashboard#token=…; a fragment never
// reaches a server, and it leaves the address bar before anything else happens
async function boot() {
  const link = /^#token=(.+)$/.exec(location.hash);
  if (link) {
    history.replaceState(null, "", location.pathname + location.search);
    try {
      const out = await api("/login", { method: "POST", body: { token: decodeURIComponent(link[1]) } });
      state.csrf = out.csrf_token;
      await start(out);
      return;
    } catch (e) {
      showLogin();
      $("login-error").textContent = String(e.message || e);
      return;
    }
  }
  // a session cookie from an earlier login in this browser: go straight in
  api("/api/me").then(start, () => showLogin());
}
boot();
