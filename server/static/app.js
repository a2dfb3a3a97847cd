// IntroLLM playground: chat through this server's streaming /v1/chat/completions and colour each
// token by the temperature it was sampled at. Plain ES2020, no dependencies, no build step.
"use strict";

// ---------------------------------------------------------------------------- colour scale
// The terminal client's scale (clients/render.py: tau_colour), ported exactly: blue (low tau) ->
// light grey -> red (high tau) over [tau_min, tau_max], grey for greedy. Rounding is half-to-even,
// as Python's round() does, so both give the same rgb() for every tau (tests/test_playground.py).
const COLD = [80, 140, 255], MID = [235, 235, 235], HOT = [255, 80, 60];

function roundHalfEven(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function tauColour(tau, tauMin, tauMax) {
  if (tau <= 0) return "rgb(150,150,150)"; // greedy
  const x = Math.min(Math.max((tau - tauMin) / (tauMax - tauMin), 0.0), 1.0);
  const [a, b, t] = x < 0.5 ? [COLD, MID, x * 2] : [MID, HOT, x * 2 - 1];
  const [r, g, bl] = a.map((p, i) => roundHalfEven(p + (b[i] - p) * t));
  return `rgb(${r},${g},${bl})`;
}

// ---------------------------------------------------------------------------- page state
const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), form: $("chat-form"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
  clear: $("clear"), key: $("api-key"), maxTokens: $("max-tokens"), seed: $("seed"), compare: $("compare"),
  compareRow: $("compare-row"), panes: $("panes"), details: $("details"),
  policy: [$("policy-a"), $("policy-b")], tau: [$("tau-a"), $("tau-b")],
};
const state = { model: null, tauMin: 0.6, tauMax: 1.5, panes: [], controllers: [] };

function setStatus(text) { ui.status.textContent = text; }

// The policy spec sent in the `policy` extension field: "learned", "fixed:0.7", "greedy", ...
function policySpec(which) {
  const name = ui.policy[which].value;
  return name === "fixed" ? `fixed:${Number(ui.tau[which].value)}` : name;
}

function syncPolicyInputs() {
  for (const i of [0, 1]) {
    const fixed = ui.policy[i].value === "fixed";
    ui.tau[i].hidden = !fixed;
    ui.tau[i].previousElementSibling.hidden = !fixed;
  }
  ui.compareRow.hidden = !ui.compare.checked;
}

function fillPolicies(names) {
  const labels = { learned: "learned (the temperature head)", fixed: "fixed temperature", greedy: "greedy (tau = 0)" };
  const order = ["learned", "fixed", "greedy", ...names.filter((n) => !["learned", "fixed", "greedy"].includes(n))];
  for (const [i, select] of ui.policy.entries()) {
    const keep = select.value || (i === 0 ? "learned" : "fixed");
    select.replaceChildren(...order.filter((n) => names.includes(n)).map((n) => new Option(labels[n] || n, n)));
    select.value = names.includes(keep) ? keep : names[0];
  }
  syncPolicyInputs();
}

function drawLegend() {
  $("legend-min").textContent = state.tauMin.toFixed(2);
  $("legend-max").textContent = state.tauMax.toFixed(2);
  const sw = [];
  for (let k = 0; k <= 8; k++) {
    const s = document.createElement("span");
    s.style.background = tauColour(state.tauMin + ((state.tauMax - state.tauMin) * k) / 8, state.tauMin, state.tauMax);
    sw.push(s);
  }
  $("legend-swatches").replaceChildren(...sw);
}

// ---------------------------------------------------------------------------- panes
// One pane per policy; each holds its own conversation (messages) and the stats of its last reply.
function makePanes() {
  const count = ui.compare.checked ? 2 : 1;
  if (state.panes.length === count) return;
  state.panes = [];
  const nodes = [];
  for (let i = 0; i < count; i++) {
    const node = $("pane-template").content.firstElementChild.cloneNode(true);
    const pane = { node, log: node.querySelector(".log"), title: node.querySelector(".pane-title"),
                   error: node.querySelector(".error"), summary: node.querySelector(".summary"), messages: [], current: -1 };
    node.dataset.index = String(i);
    pane.log.setAttribute("aria-label", `Conversation ${i + 1}`);
    pane.log.addEventListener("keydown", (ev) => moveCursor(pane, ev));
    state.panes.push(pane);
    nodes.push(node);
  }
  ui.panes.replaceChildren(...nodes);
  ui.panes.classList.toggle("compare", count === 2);
  titlePanes();
}

function titlePanes() {
  state.panes.forEach((p, i) => { p.title.textContent = state.panes.length > 1 ? `${"AB"[i]}: ${policySpec(i)}` : policySpec(i); });
}

function addTurn(pane, role, text) {
  const turn = document.createElement("div");
  turn.className = `turn ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "you" : `model · ${policySpec(Number(pane.node.dataset.index))}`;
  const body = document.createElement("div");
  body.className = role === "user" ? "text" : "reply";
  if (text) body.textContent = text;
  turn.append(who, body);
  pane.log.append(turn);
  pane.log.scrollTop = pane.log.scrollHeight;
  return body;
}

function showError(pane, message) {
  pane.error.textContent = message;
  pane.error.hidden = false;
}

function describe(span) {
  const d = span.dataset;
  const piece = JSON.stringify(span.textContent);
  const tau = Number(d.tau);
  const flag = d.updated === "true" ? "updated (a new temperature was chosen here)" : "not updated (kept the previous temperature)";
  const lp = d.logprob === "" ? "log-prob n/a" : `log-prob ${Number(d.logprob).toFixed(3)} (p = ${probability(Number(d.logprob))})`;
  return `token ${d.i} ${piece} · tau ${tau === 0 ? "0 (greedy)" : tau.toFixed(3)} · ${flag} · ${lp}`;
}

function probability(logprob) {
  const p = Math.exp(logprob);
  return p >= 0.001 ? p.toFixed(3) : p.toExponential(1);
}

function showDetails(span) { ui.details.textContent = describe(span); }

// Keyboard access to the tokens: focus a conversation, then arrows / Home / End move a cursor.
function moveCursor(pane, ev) {
  const toks = pane.log.querySelectorAll(".tok");
  if (!toks.length) return;
  const moves = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 };
  let next;
  if (ev.key in moves) next = pane.current < 0 ? (moves[ev.key] > 0 ? 0 : toks.length - 1) : pane.current + moves[ev.key];
  else if (ev.key === "Home") next = 0;
  else if (ev.key === "End") next = toks.length - 1;
  else return;
  ev.preventDefault();
  next = Math.min(Math.max(next, 0), toks.length - 1);
  if (pane.current >= 0 && toks[pane.current]) toks[pane.current].classList.remove("current");
  pane.current = next;
  toks[next].classList.add("current");
  toks[next].scrollIntoView({ block: "nearest" });
  showDetails(toks[next]);
}

// ---------------------------------------------------------------------------- streaming
function summarise(pane, stats, ending) {
  const n = stats.taus.length;
  const secs = (performance.now() - stats.t0) / 1000;
  const mean = n ? stats.taus.reduce((a, b) => a + b, 0) / n : 0;
  let line = n ? `${n} tokens · mean tau ${mean.toFixed(3)} · ${stats.updates} updates · ${(n / Math.max(secs, 1e-3)).toFixed(1)} tok/s`
               : "no tokens yet";
  if (ending) line += ` · ${ending}`;
  pane.summary.textContent = line;
}

function addTokens(pane, reply, stats, trace, logprobs) {
  const frag = document.createDocumentFragment();
  for (let j = 0; j < trace.tokens.length; j++) {
    const span = document.createElement("span");
    const tau = trace.temperatures[j], upd = Boolean(trace.updated[j]);
    const lp = logprobs && logprobs[j] ? logprobs[j].logprob : null;
    span.className = "tok" + (upd ? " upd" : "") + (trace.tokens[j] === "" ? " empty" : "");
    span.textContent = trace.tokens[j];
    span.style.background = tauColour(tau, state.tauMin, state.tauMax);
    Object.assign(span.dataset, { i: String(stats.taus.length), tau: String(tau), updated: String(upd),
                                  logprob: lp === null ? "" : String(lp), tokenId: String(trace.token_ids[j]) });
    span.title = describe(span);
    stats.taus.push(tau);
    if (upd) stats.updates += 1;
    frag.append(span);
  }
  reply.append(frag);
}

// SSE over fetch: read the body, split it into events at blank lines, take each `data:` payload.
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data) yield data;
    }
  }
}

async function errorMessage(res) {
  const text = await res.text();
  let message = text.trim() || res.statusText;
  try { message = JSON.parse(text).error.message || message; } catch (_) { /* not JSON: show as is */ }
  const hint = res.status === 401 ? " (check the API key field)" : "";
  return `Error ${res.status}: ${message}${hint}`;
}

// Stream one reply into `pane` for its conversation; resolves when done, stopped or failed.
async function streamReply(pane, index, signal) {
  const stats = { taus: [], updates: 0, t0: performance.now() };
  const reply = addTurn(pane, "assistant", "");
  const node = pane.node;
  node.dataset.state = "streaming";
  pane.error.hidden = true;
  summarise(pane, stats, "waiting for the first token");
  const headers = { "Content-Type": "application/json" };
  if (ui.key.value) headers.Authorization = `Bearer ${ui.key.value}`;
  const body = {
    model: state.model, messages: pane.messages, stream: true, logprobs: true,
    max_tokens: Number(ui.maxTokens.value), policy: policySpec(index), stream_options: { include_usage: true },
  };
  if (ui.seed.value.trim() !== "") body.seed = Number(ui.seed.value);
  let text = "", finish = null, ended = "done";
  try {
    const res = await fetch("/v1/chat/completions", { method: "POST", headers, body: JSON.stringify(body), signal });
    if (!res.ok) throw new Error(await errorMessage(res));
    for await (const data of sseEvents(res.body)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(`Error from the server: ${chunk.error.message}`);
      for (const c of chunk.choices || []) {
        if (c.delta && c.delta.content) text += c.delta.content;
        if (c.temperature_trace) addTokens(pane, reply, stats, c.temperature_trace, c.logprobs && c.logprobs.content);
        if (c.finish_reason) finish = c.finish_reason;
      }
      if (chunk.usage) node.dataset.completionTokens = String(chunk.usage.completion_tokens);
      pane.log.scrollTop = pane.log.scrollHeight;
      summarise(pane, stats, null);
    }
    if (finish === null) throw new Error("Error: the stream ended without a finish reason");
  } catch (err) {
    if (signal.aborted) ended = "stopped";
    else {
      ended = "error";
      showError(pane, err instanceof TypeError ? `Could not reach the server: ${err.message}` : err.message);
    }
  }
  reply.dataset.text = text; // the reply as the API's `content` deltas gave it
  if (ended === "error" && !text) {
    pane.messages.pop(); // the user turn failed: leave it out of the conversation sent next time
    if (!reply.childElementCount) reply.parentElement.remove(); // no empty "model" turn
  } else {
    pane.messages.push({ role: "assistant", content: text });
  }
  summarise(pane, stats, ended === "done" ? `finished (${finish})` : ended);
  node.dataset.state = ended;
}

async function send() {
  const prompt = ui.prompt.value;
  if (!prompt.trim() || !state.model || state.controllers.length) return;
  makePanes();
  titlePanes();
  ui.prompt.value = "";
  ui.send.disabled = true;
  ui.stop.disabled = false;
  state.controllers = state.panes.map(() => new AbortController());
  await Promise.all(state.panes.map((pane, i) => {
    pane.messages.push({ role: "user", content: prompt });
    addTurn(pane, "user", prompt);
    return streamReply(pane, i, state.controllers[i].signal);
  }));
  state.controllers = [];
  ui.send.disabled = false;
  ui.stop.disabled = true;
  ui.prompt.focus();
}

function stop() {
  for (const c of state.controllers) c.abort(); // closes the connection: the server cancels the request
}

function clearAll() {
  stop();
  state.panes = [];
  makePanes();
  ui.details.textContent = "Point at a token to see its temperature.";
}

// ---------------------------------------------------------------------------- start-up
async function connect() {
  for (;;) {
    let health = null;
    try {
      const res = await fetch("/health");
      health = await res.json();
    } catch (_) { /* not up yet */ }
    if (health && health.status === "ok") {
      state.model = health.model;
      break;
    }
    setStatus(health && health.status === "error" ? `The model failed to load: ${health.message}` : "Waiting for the model to load…");
    if (health && health.status === "error") return;
    await new Promise((r) => setTimeout(r, 1000));
  }
  try {
    const cfg = await (await fetch("/ui/config")).json();
    state.tauMin = cfg.tau_min;
    state.tauMax = cfg.tau_max;
    fillPolicies(cfg.policies);
    if (!cfg.head) ui.policy[0].value = "fixed";
  } catch (_) {
    fillPolicies(["learned", "fixed", "greedy"]);
  }
  syncPolicyInputs();
  drawLegend();
  titlePanes();
  setStatus(`Model: ${state.model}`);
  ui.send.disabled = false;
}

ui.form.addEventListener("submit", (ev) => { ev.preventDefault(); send(); });
ui.stop.addEventListener("click", stop);
ui.clear.addEventListener("click", clearAll);
ui.prompt.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); send(); }
});
document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") stop(); });
ui.panes.addEventListener("mouseover", (ev) => { if (ev.target.classList.contains("tok")) showDetails(ev.target); });
ui.compare.addEventListener("change", () => { if (!state.controllers.length) makePanes(); syncPolicyInputs(); });
for (const el of [...ui.policy, ...ui.tau]) el.addEventListener("change", () => { syncPolicyInputs(); titlePanes(); });

window.IntroLLM = { tauColour }; // for tests and the console
fillPolicies(["learned", "fixed", "greedy"]);
drawLegend();
makePanes();
connect();
