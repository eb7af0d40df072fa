// The console's live dashboard: polls /metrics (Prometheus text), keeps a short history and
// draws cards, tables and small line charts. Percentiles come from histogram bucket deltas
// over the last 30 s, interpolated within a bucket as Prometheus' histogram_quantile does.
"use strict";

const WINDOW_MS = 30000;
const KEEP = 120;
const snapshots = [];
const series = { tps: [], running: [], waiting: [], ttft50: [], ttft99: [], tpot50: [], tpot99: [] };
let timer = null;

// Parses Prometheus text into [{name, labels, value}].
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$/);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const l of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

const pick = (rows, name, filter) => rows.filter((r) => r.name === name && (!filter || filter(r.labels)));
const sum = (rows) => rows.reduce((a, r) => a + r.value, 0);
const podSeries = (l) => !("engine" in l);

// Cumulative buckets {le -> count} of a histogram, summed over series that pass `filter`.
function buckets(rows, name, filter) {
  const b = new Map();
  for (const r of pick(rows, name + "_bucket", filter)) {
    const le = r.labels.le === "+Inf" ? Infinity : Number(r.labels.le);
    b.set(le, (b.get(le) || 0) + r.value);
  }
  return b;
}

function quantile(q, now, then) {
  const les = [...now.keys()].sort((a, b) => a - b);
  const delta = les.map((le) => (now.get(le) || 0) - ((then && then.get(le)) || 0));
  const total = delta[delta.length - 1];
  if (!total) return null;
  const rank = q * total;
  for (let i = 0; i < les.length; i++) {
    if (delta[i] >= rank) {
      const lo = i ? les[i - 1] : 0;
      const hi = les[i] === Infinity ? lo : les[i];
      const below = i ? delta[i - 1] : 0;
      const inBucket = delta[i] - below;
      return inBucket > 0 ? lo + (hi - lo) * ((rank - below) / inBucket) : hi;
    }
  }
  return null;
}

const fmtS = (v) => (v === null ? "–" : v < 1 ? (v * 1000).toFixed(0) + " ms" : v.toFixed(2) + " s");
const pct = (v) => (100 * v).toFixed(1) + "%";

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

function fillTable(id, rows) {
  const tbody = document.querySelector("#" + id + " tbody");
  tbody.innerHTML = "";
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const v of row) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
}

function chart(id, lines) {
  const svg = document.getElementById(id);
  const all = lines.flatMap((l) => l.values).filter((v) => v !== null);
  const max = Math.max(1e-9, ...all);
  svg.innerHTML = "";
  for (const { values, color } of lines) {
    const pts = values.map((v, i) => (v === null ? null : (i * 300) / (KEEP - 1) + "," + (78 - (v / max) * 74))).filter(Boolean);
    const pl = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    pl.setAttribute("points", pts.join(" "));
    pl.setAttribute("stroke", color);
    svg.appendChild(pl);
  }
  const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
  label.setAttribute("x", "2");
  label.setAttribute("y", "10");
  label.setAttribute("font-size", "9");
  label.setAttribute("fill", "#6b7580");
  label.textContent = "max " + (max < 10 ? max.toFixed(3) : max.toFixed(0));
  svg.appendChild(label);
}

function push(name, v) {
  series[name].push(v);
  if (series[name].length > KEEP) series[name].shift();
}

function render(rows, now) {
  snapshots.push({ t: now, rows });
  while (snapshots.length > 2 && now - snapshots[1].t > WINDOW_MS) snapshots.shift();
  const prev = snapshots.length > 1 ? snapshots[snapshots.length - 2] : null;
  const old = snapshots[0] !== snapshots[snapshots.length - 1] ? snapshots[0] : null;
  const running = sum(pick(rows, "vllm:num_requests_running", podSeries));
  const waiting = sum(pick(rows, "vllm:num_requests_waiting", podSeries));
  const kv = sum(pick(rows, "vllm:kv_cache_usage_perc", podSeries));
  const q = sum(pick(rows, "vllm:prefix_cache_queries_total", podSeries));
  const h = sum(pick(rows, "vllm:prefix_cache_hits_total", podSeries));
  const gen = sum(pick(rows, "vllm:generation_tokens_total", podSeries));
  const finished = sum(pick(rows, "vllm:request_success_total", podSeries));
  let tps = null;
  if (prev) {
    const dt = (now - prev.t) / 1000;
    tps = dt > 0 ? (gen - sum(pick(prev.rows, "vllm:generation_tokens_total", podSeries))) / dt : null;
  }
  const hist = (rs, name, f) => buckets(rs, name, f);
  const ttftNow = hist(rows, "vllm:time_to_first_token_seconds");
  const tpotNow = hist(rows, "vllm:inter_token_latency_seconds");
  const ttftOld = old ? hist(old.rows, "vllm:time_to_first_token_seconds") : null;
  const tpotOld = old ? hist(old.rows, "vllm:inter_token_latency_seconds") : null;
  const t50 = quantile(0.5, ttftNow, ttftOld), t99 = quantile(0.99, ttftNow, ttftOld);
  const p50 = quantile(0.5, tpotNow, tpotOld), p99 = quantile(0.99, tpotNow, tpotOld);
  setText("stat-running", String(running));
  setText("stat-waiting", String(waiting));
  setText("stat-kv", pct(kv));
  setText("stat-prefix", q ? pct(h / q) : "–");
  setText("stat-tps", tps === null ? "–" : tps.toFixed(1));
  setText("stat-gen-tokens", String(gen));
  setText("stat-finished", String(finished));
  setText("stat-ttft", fmtS(t50) + " / " + fmtS(t99));
  setText("stat-tpot", fmtS(p50) + " / " + fmtS(p99));
  push("tps", tps); push("running", running); push("waiting", waiting);
  push("ttft50", t50); push("ttft99", t99); push("tpot50", p50); push("tpot99", p99);
  chart("chart-tps", [{ values: series.tps, color: "#2563eb" }]);
  chart("chart-load", [{ values: series.running, color: "#2e7d32" }, { values: series.waiting, color: "#c62828" }]);
  chart("chart-ttft", [{ values: series.ttft50, color: "#2563eb" }, { values: series.ttft99, color: "#c62828" }]);
  chart("chart-tpot", [{ values: series.tpot50, color: "#2563eb" }, { values: series.tpot99, color: "#c62828" }]);
  renderTables(rows);
  setText("dash-updated", "updated " + new Date(now).toLocaleTimeString());
}

function renderTables(rows) {
  const engines = [...new Set(pick(rows, "vllm:num_requests_running", (l) => "engine" in l).map((r) => r.labels.engine))];
  fillTable("replicas", engines.map((e) => {
    const f = (l) => l.engine === e;
    const q = sum(pick(rows, "vllm:prefix_cache_queries_total", f));
    return [e, sum(pick(rows, "vllm:num_requests_running", f)), sum(pick(rows, "vllm:num_requests_waiting", f)),
      pct(sum(pick(rows, "vllm:kv_cache_usage_perc", f))), q ? pct(sum(pick(rows, "vllm:prefix_cache_hits_total", f)) / q) : "–",
      sum(pick(rows, "vllm:generation_tokens_total", f)), fmtS(quantile(0.5, buckets(rows, "vllm:time_to_first_token_seconds", f), null))];
  }));
  const tenants = [...new Set(pick(rows, "mlahost_tenant_requests_total").map((r) => r.labels.tenant))];
  document.getElementById("tenants-note").classList.toggle("hidden", tenants.length > 0);
  fillTable("tenants", tenants.map((t) => {
    const f = (l) => l.tenant === t;
    return [t, sum(pick(rows, "mlahost_tenant_requests_total", f)), sum(pick(rows, "mlahost_tenant_rejections_total", f)),
      sum(pick(rows, "mlahost_tenant_prompt_tokens_total", f)), sum(pick(rows, "mlahost_tenant_generation_tokens_total", f)),
      fmtS(quantile(0.5, buckets(rows, "mlahost_tenant_time_to_first_token_seconds", f), null))];
  }));
  const plugins = pick(rows, "mlahost_plugin_calls_total").map((r) => r.labels);
  fillTable("plugin-stats", plugins.map((p) => {
    const f = (l) => l.plugin === p.plugin;
    return [p.plugin, p.kind, sum(pick(rows, "mlahost_plugin_calls_total", f)), sum(pick(rows, "mlahost_plugin_traps_total", f)),
      sum(pick(rows, "mlahost_plugin_timeouts_total", f)), sum(pick(rows, "mlahost_plugin_fallbacks_total", f)),
      fmtS(quantile(0.5, buckets(rows, "mlahost_plugin_call_latency_seconds", f), null))];
  }));
}

async function poll() {
  try {
    // The admin key, when typed, also unlocks the per-tenant families.
    const admin = document.getElementById("admin-key").value.trim();
    const r = await fetch("/metrics", { headers: admin ? { authorization: "Bearer " + admin } : {} });
    render(parseMetrics(await r.text()), Date.now());
  } catch (e) {
    setText("dash-updated", "metrics: " + e.message);
  }
}

function restart() {
  if (timer) clearInterval(timer);
  timer = setInterval(poll, Number(document.getElementById("refresh").value));
  poll();
}
document.getElementById("refresh").addEventListener("change", restart);
restart();
