// The console's chat playground, plan and plugins tabs. Plain JS, no dependencies; the
// dashboard lives in dashboard.js.
"use strict";

const $ = (id) => document.getElementById(id);
const store = window.localStorage;

function headers(extra) {
  const h = Object.assign({ "content-type": "application/json" }, extra || {});
  const key = $("api-key").value.trim();
  if (key) h.authorization = "Bearer " + key;
  return h;
}

async function getJson(path) {
  const r = await fetch(path, { headers: headers() });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || r.status + " " + r.statusText);
  return body;
}

// ---- tabs ----
const tabs = ["chat", "dashboard", "plan", "plugins"];
function show(tab) {
  for (const t of tabs) {
    $("panel-" + t).classList.toggle("hidden", t !== tab);
    $("tab-" + t).classList.toggle("active", t === tab);
  }
  if (tab === "plan") loadPlan();
  if (tab === "plugins") loadPlugins();
  window.location.hash = tab;
}
for (const t of tabs) $("tab-" + t).addEventListener("click", () => show(t));

// ---- header: health and models ----
async function refreshHealth() {
  const pill = $("health");
  try {
    const r = await fetch("/health");
    pill.textContent = r.ok ? "ready" : "loading";
    pill.className = "pill " + (r.ok ? "ok" : "bad");
  } catch (e) {
    pill.textContent = "offline";
    pill.className = "pill bad";
  }
}

async function loadModels() {
  try {
    const list = await getJson("/v1/models");
    const sel = $("model-select");
    sel.innerHTML = "";
    for (const m of list.data) {
      const o = document.createElement("option");
      o.value = m.id;
      o.textContent = m.id + " (max " + m.max_model_len + ")";
      sel.appendChild(o);
    }
    if (list.data.length) $("model-name").textContent = list.data[0].id;
  } catch (e) {
    $("chat-status").textContent = "models: " + e.message;
  }
}

// ---- chat ----
const history = [];
let controller = null;

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role;
  const body = document.createElement("span");
  body.className = "content";
  body.textContent = text;
  div.append(label, body);
  $("messages").appendChild(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return body;
}

function numberOr(id, fallback) {
  const v = $(id).value.trim();
  return v === "" ? fallback : Number(v);
}

function chatRequest() {
  const messages = [];
  const system = $("system-prompt").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  const req = {
    model: $("model-select").value || undefined,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: numberOr("temperature", 0.7),
    top_p: numberOr("top-p", 1),
    top_k: numberOr("top-k", -1),
    max_tokens: numberOr("max-tokens", 128),
  };
  const seed = numberOr("seed", null);
  if (seed !== null) req.seed = seed;
  if ($("logprobs").checked) {
    req.logprobs = true;
    req.top_logprobs = numberOr("top-logprobs", 0);
  }
  return req;
}

// Appends one streamed token, as a clickable span when it carries logprobs.
function appendToken(body, text, lp) {
  if (!lp) {
    body.appendChild(document.createTextNode(text));
    return;
  }
  const span = document.createElement("span");
  span.className = "tok";
  span.textContent = text;
  const p = Math.exp(lp.logprob);
  span.style.borderBottomColor = "hsl(" + Math.round(120 * p) + ", 70%, 45%)";
  span.title = "logprob " + lp.logprob.toFixed(3);
  span.addEventListener("click", () => showAlternatives(lp));
  body.appendChild(span);
}

function showAlternatives(lp) {
  const out = $("logprob-detail");
  out.innerHTML = "";
  const table = document.createElement("table");
  const rows = [[JSON.stringify(lp.token), lp.logprob]].concat((lp.top_logprobs || []).map((t) => [JSON.stringify(t.token), t.logprob]));
  for (const [tok, val] of rows) {
    const tr = document.createElement("tr");
    const a = document.createElement("td");
    a.textContent = tok;
    const b = document.createElement("td");
    b.textContent = val.toFixed(3) + " (" + (100 * Math.exp(val)).toFixed(1) + "%)";
    tr.append(a, b);
    table.appendChild(tr);
  }
  out.appendChild(table);
}

// Reads an SSE body, calling onEvent with each parsed `data:` JSON until [DONE].
async function readSse(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

async function send(ev) {
  ev.preventDefault();
  const text = $("chat-input").value;
  if (!text.trim() || controller) return;
  $("chat-input").value = "";
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const body = addMessage("assistant", "");
  const started = performance.now();
  let first = null;
  let tokens = 0;
  let reply = "";
  controller = new AbortController();
  $("chat-send").disabled = true;
  $("chat-stop").disabled = false;
  $("chat-status").textContent = "waiting for the first token…";
  try {
    const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(chatRequest()), signal: controller.signal });
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      throw new Error((e.error && e.error.message) || r.status + " " + r.statusText);
    }
    let usage = null;
    await readSse(r, (chunk) => {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices || []) {
        const delta = (c.delta && c.delta.content) || "";
        const lps = c.logprobs && c.logprobs.content;
        if (lps && lps.length) {
          // One span per token; the delta's text is split the way the tokens are.
          for (const lp of lps) appendToken(body, lp.token, lp);
        } else if (delta) {
          appendToken(body, delta, null);
        }
        if (delta || (lps && lps.length)) {
          tokens += lps && lps.length ? lps.length : 1;
          if (first === null) first = performance.now();
          reply += delta;
          $("messages").scrollTop = $("messages").scrollHeight;
        }
      }
    });
    history.push({ role: "assistant", content: reply });
    const total = (performance.now() - started) / 1000;
    const ttft = first === null ? "–" : ((first - started) / 1000).toFixed(3) + " s";
    const n = usage ? usage.completion_tokens : tokens;
    $("chat-status").textContent = n + " tokens in " + total.toFixed(2) + " s, TTFT " + ttft;
  } catch (e) {
    if (e.name === "AbortError") {
      $("chat-status").textContent = "stopped";
      history.push({ role: "assistant", content: reply });
    } else {
      body.parentElement.classList.add("error");
      body.textContent = e.message;
      history.pop();
      $("chat-status").textContent = "error";
    }
  } finally {
    controller = null;
    $("chat-send").disabled = false;
    $("chat-stop").disabled = true;
  }
}

$("chat-form").addEventListener("submit", send);
$("chat-input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) send(e);
});
$("chat-stop").addEventListener("click", () => controller && controller.abort());
$("chat-clear").addEventListener("click", () => {
  history.length = 0;
  $("messages").innerHTML = "";
  $("chat-status").textContent = "";
});

// ---- plan ----
function human(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(2) : String(v)) + " " + units[i];
}

async function loadPlan() {
  const ctx = $("plan-context").value.trim();
  try {
    const p = await getJson("/console/plan" + (ctx ? "?context=" + encodeURIComponent(ctx) : ""));
    if (!ctx) $("plan-context").value = p.per_sequence.context;
    const t = p.per_token_per_layer;
    const s = p.per_sequence;
    const pool = p.pool;
    const lines = [
      "model        " + p.model + "  (" + p.shape.layers + " layers, " + p.shape.heads + " heads, kv_lora " + p.shape.kv_lora_rank + ", rope " + p.shape.qk_rope_head_dim + ")",
      "weights      " + p.weights.parameters.toLocaleString() + " parameters -> " + human(p.weights.bytes_bf16) + " in bf16 (from " + p.weights.source + ")",
      "",
      "KV cache per token per layer (" + p.kv_cache_dtype + "):",
      "  MLA c_kv                " + t.c_kv + " B",
      "  MLA k_pe                " + t.k_pe + " B",
      "  MLA stored              " + t.stored + " B",
      "  MHA, same shape         " + t.mha + " B",
      "  GQA-8, same shape       " + t.gqa8 + " B",
      "",
      "One sequence of " + s.context.toLocaleString() + " tokens over " + p.shape.layers + " layers:",
      "  MLA stored   " + human(s.stored_bytes),
      "  MHA          " + human(s.mha_bytes),
      "  GQA-8        " + human(s.gqa8_bytes),
      "",
      "Pool as allocated (" + p.device + ", page " + pool.page_size + " tokens = " + human(pool.page_bytes) + "):",
      "  pages                   " + pool.pages.toLocaleString() + " per replica",
      "  tokens                  " + pool.tokens.toLocaleString() + " per replica (" + human(pool.bytes) + ")",
      "  sequences of " + s.context.toLocaleString() + "    " + pool.sequences_per_replica + " per replica, " + pool.sequences + " over " + pool.replicas + " replica(s)",
    ];
    $("plan-out").textContent = lines.join("\n");
    $("plan-out").className = "";
  } catch (e) {
    $("plan-out").textContent = "plan: " + e.message;
  }
}
$("plan-run").addEventListener("click", loadPlan);

// ---- plugins ----
async function loadPlugins() {
  try {
    const p = await getJson("/console/plugins");
    const tbody = document.querySelector("#plugins tbody");
    tbody.innerHTML = "";
    for (const x of p.plugins) {
      const tr = document.createElement("tr");
      for (const v of [x.name, x.kind, x.calls, x.traps, x.timeouts, x.reloads]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      tbody.appendChild(tr);
    }
    $("plugins-empty").classList.toggle("hidden", p.plugins.length > 0);
    $("plugins-reload").disabled = !p.admin_enabled;
    if (!p.admin_enabled) $("reload-result").textContent = "reload needs the server's --admin-key";
  } catch (e) {
    $("reload-result").textContent = "plugins: " + e.message;
  }
}

$("plugins-reload").addEventListener("click", async () => {
  const key = $("admin-key").value.trim();
  const out = $("reload-result");
  try {
    const r = await fetch("/admin/plugins/reload", { method: "POST", headers: { authorization: "Bearer " + key } });
    const body = await r.json().catch(() => ({}));
    if (body.error) out.textContent = "refused: " + body.error.message;
    else out.textContent = (body.plugins || []).map((p) => p.plugin + ": " + (p.reloaded ? "reloaded" : "failed (" + p.error + ")")).join(", ") || "no plugins";
  } catch (e) {
    out.textContent = "reload: " + e.message;
  }
  loadPlugins();
});

// ---- start ----
$("api-key").value = store.getItem("mlahost.apiKey") || "";
$("api-key").addEventListener("change", () => { store.setItem("mlahost.apiKey", $("api-key").value); loadModels(); });
refreshHealth();
setInterval(refreshHealth, 5000);
loadModels();
show(tabs.includes(window.location.hash.slice(1)) ? window.location.hash.slice(1) : "chat");
