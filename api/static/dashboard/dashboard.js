// clipq dashboard: a thin client over the public API. No framework, no build step.
"use strict";
const KEY = "clipq.apiKey";
const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);
// /dashboard?tenant=shop-a: an admin key looks at that tenant (sent as ?tenant= with every call)
const TENANT = new URLSearchParams(location.search).get("tenant");

// -- talking to the API ------------------------------------------------------------------
class AuthError extends Error {}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.set("X-API-Key", key);
  const url = new URL(path, location.origin);
  if (TENANT) url.searchParams.set("tenant", TENANT);
  const response = await fetch(url.pathname + url.search, { ...options, headers });
  if (response.status === 401 || response.status === 403) {
    askForKey(response.status, !!key);
    throw new AuthError(key ? "the API key was refused" : "an API key is needed");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (body.error && body.error.message) || response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

function askForKey(status, sentKey) {
  // an unknown key answers 401 as a missing one: whether this request carried one tells them apart
  if (sentKey) sessionStorage.removeItem(KEY);
  $("key-message").textContent = sentKey
    ? `Wrong API key: the server refused it (${status}). Enter the right key.`
    : "This API needs a key (API_KEY is set on the server). Enter it to see workers and failures and to search.";
  $("key-form").hidden = false;
  $("forget-key").hidden = true;
}

function setupKey() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("key-input").value.trim());
    $("key-input").value = "";
    $("key-form").hidden = true;
    refresh();
  });
  $("forget-key").addEventListener("click", () => { sessionStorage.removeItem(KEY); location.reload(); });
  $("forget-key").hidden = !sessionStorage.getItem(KEY);
}

// -- small DOM helpers -------------------------------------------------------------------
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function row(cells) {
  const tr = el("tr");
  for (const c of cells) { const td = c instanceof Node ? c : el("td", c); tr.append(td.tagName === "TD" ? td : wrap(td)); }
  return tr;
}
function wrap(node) { const td = el("td"); td.append(node); return td; }
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
function outcome(node, ok, text) { node.textContent = text; node.className = "outcome " + (ok ? "ok" : "bad"); }

// -- queue -------------------------------------------------------------------------------
const count = (v) => (v === undefined || v === null ? "–" : v);

async function loadTenant() {
  const me = await api("/api/v1/whoami");
  $("tenant").textContent = me.admin ? (me.tenant === null ? "admin: every tenant" : `admin: tenant ${me.tenant}`)
    : `tenant ${me.tenant}`;
}

async function loadQueue() {
  const s = await api("/api/v1/queue/stats");
  const jobs = s.jobs || {};  // a tenant's own counters: none until they are kept
  $("n-pending").textContent = count(s.pending_in_queue);
  $("n-processing").textContent = count(jobs.processing);
  $("n-delayed").textContent = count(s.delayed_retries);
  $("n-completed").textContent = count(jobs.completed);
  const skipped = s.completed_without_model;
  $("n-without-model").textContent = skipped ? (skipped.unchanged || 0) + (skipped.reused || 0) : "–";
  $("n-failed").textContent = count(jobs.failed);
  const h = await api("/api/v1/queue/history?minutes=15");
  spark("spark-depth", h.samples.map((x) => x.pending + x.delayed), "spark-depth-now");
  spark("spark-rate", h.samples.map((x) => x.completed_per_s || 0), "spark-rate-now");
}

function spark(id, values, labelId) {
  const svg = $(id);
  svg.replaceChildren();
  $(labelId).textContent = values.length ? `(now ${values[values.length - 1]}, max ${Math.max(...values)})` : "(no samples yet)";
  if (!values.length) return;
  const max = Math.max(...values, 1);
  const series = values.length === 1 ? [values[0], values[0]] : values;
  const points = series.map((v, i) => `${(i / (series.length - 1)) * 300},${38 - (v / max) * 36}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
}

// -- workers -----------------------------------------------------------------------------
async function loadWorkers() {
  const { workers } = await api("/api/v1/workers");
  $("n-workers").textContent = workers.length;
  $("worker-rows").replaceChildren(...workers.map((w) => row([
    el("td", w.worker_id, "mono"), w.device, w.model, w.precision,
    `${w.batch_ceiling} / ${w.max_batch_size}`, `${(w.heartbeat_age_s ?? 0).toFixed(1)} s ago`,
    w.jobs_per_s, el("span", w.query_lane_alive ? "alive" : "down", "pill " + (w.query_lane_alive ? "ok" : "bad")),
  ])));
}

// -- failures ----------------------------------------------------------------------------
async function loadFailures() {
  const g = await api("/api/v1/queue/failed/groups");
  const hours = Math.round(g.window.seconds / 3600);
  $("group-window").textContent = `Grouped by error over the newest ${g.window.max_jobs} failures of the last ${hours} h` +
    ` (${g.window.scanned} found${g.window.truncated ? ", older ones left out" : ""}).`;
  $("group-rows").replaceChildren(...g.groups.map((x) => {
    const button = el("button", "Retry group");
    const result = el("span", "", "outcome");
    button.addEventListener("click", () => retry(`/api/v1/queue/failed/groups/${x.group_id}/retry`, button, result));
    const cell = el("td"); cell.append(button, " ", result);
    return row([el("td", x.error, "err"), x.count, when(x.first_seen), when(x.last_seen),
      el("td", x.sample_job_ids.join(" "), "mono"), cell]);
  }));
  const { jobs } = await api("/api/v1/queue/failed?limit=20");
  $("failed-rows").replaceChildren(...jobs.map((j) => {
    const button = el("button", "Retry");
    button.dataset.job = j.job_id;
    const result = el("span", "", "outcome");
    button.addEventListener("click", () => retry(`/api/v1/queue/retry/${j.job_id}`, button, result));
    const cell = el("td"); cell.append(button, " ", result);
    return row([el("td", j.job_id, "mono"), j.product_id, el("td", j.error_message, "err"), when(j.updated_at), cell]);
  }));
}

async function retry(path, button, result) {
  button.disabled = true;
  try {
    const r = await api(path, { method: "POST" });
    outcome(result, true, r.message || `retried ${r.retried}` + (r.image_expired ? `, ${r.image_expired} image expired` : ""));
  } catch (err) {
    outcome(result, false, err.message);
  }
  button.disabled = false;
  pause = Date.now() + 4000;  // leave the outcome on screen for a moment
}

async function lookup(event) {
  event.preventDefault();
  const list = $("lookup-result");
  try {
    const s = await api(`/api/v1/queue/status/${encodeURIComponent($("lookup-input").value.trim())}`);
    list.replaceChildren(...Object.entries(s).flatMap(([k, v]) => [el("dt", k), el("dd", v ?? "–")]));
  } catch (err) {
    list.replaceChildren(el("dt", "error"), el("dd", err.message));
  }
}

// -- search ------------------------------------------------------------------------------
async function searchText(event) {
  event.preventDefault();
  const text = $("search-text").value.trim();
  if (!text) return;
  await showResults(() => api("/api/v1/search", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text, mode: $("search-mode").value, limit: 10 }) }), `"${text}"`);
}

async function searchImage(file) {
  if (!file) return;
  const form = new FormData();
  form.append("image_file", file);
  form.append("limit", "10");
  await showResults(() => api("/api/v1/search/image", { method: "POST", body: form }), file.name);
}

async function showResults(call, what) {
  const status = $("search-status");
  status.textContent = `Searching for ${what}…`;
  try {
    const r = await call();
    status.textContent = `${r.results.length} results for ${what} in ${r.took_ms} ms`;
    $("search-results").replaceChildren(...r.results.map(result));
  } catch (err) {
    status.textContent = `Search failed: ${err.message}`;
  }
}

function result(hit) {
  const li = el("li");
  const url = hit.metadata && hit.metadata.image_url;
  if (typeof url === "string" && /^https?:\/\//.test(url)) {
    const img = el("img");
    img.src = url; img.alt = ""; img.loading = "lazy"; img.referrerPolicy = "no-referrer";
    li.append(img);
  }
  const text = el("div");
  text.append(el("b", hit.name || "(no name)"), " ", el("code", hit.product_id), " ",
    el("span", `score ${hit.score.toFixed(4)}`, "muted"), el("div", JSON.stringify(hit.metadata), "mono muted"));
  li.append(text);
  return li;
}

function setupDrop() {
  const zone = $("drop-zone");
  $("search-file").addEventListener("change", (e) => searchImage(e.target.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); searchImage(e.dataTransfer.files[0]); });
}

// -- the refresh loop --------------------------------------------------------------------
let pause = 0;
async function refresh() {
  if (Date.now() < pause) return;
  const parts = [loadTenant(), loadQueue(), loadWorkers(), loadFailures()];
  const results = await Promise.allSettled(parts);
  const failed = results.filter((r) => r.status === "rejected" && !(r.reason instanceof AuthError));
  const conn = $("conn");
  conn.textContent = failed.length ? `error: ${failed[0].reason.message}` : "live";
  conn.className = "pill " + (failed.length ? "bad" : "ok");
  if (!results.some((r) => r.reason instanceof AuthError)) $("forget-key").hidden = !sessionStorage.getItem(KEY);
  $("updated").textContent = `Last update ${new Date().toLocaleTimeString()}.`;
}

document.addEventListener("DOMContentLoaded", () => {
  setupKey();
  setupDrop();
  $("lookup-form").addEventListener("submit", lookup);
  $("search-form").addEventListener("submit", searchText);
  $("retry-all").addEventListener("click", () => {
    if (confirm("Retry every failed job?")) retry("/api/v1/queue/failed/retry", $("retry-all"), $("retry-all-outcome"));
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
});
