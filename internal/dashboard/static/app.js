// The local stack's dashboard. Every value from a task, an agent or a log is
// untrusted: it only ever reaches the page through textContent.
"use strict";

let config = null;
const etags = new Map();
let currentRun = null; // {taskId, runId, rendered}
let commandId = 0; // JSON-RPC ids of the follow-ups this page sends

const terminal = new Set(["completed", "failed", "cancelled"]);

function api(path) {
  return `/api/projects/${encodeURIComponent(config.projectId)}${path}`;
}

// get fetches a JSON (or JSON lines) resource; it returns null when the
// server answers 304 because nothing changed since the last time.
async function get(path, lines) {
  const headers = { Authorization: `Bearer ${config.apiKey}` };
  if (etags.has(path)) headers["If-None-Match"] = etags.get(path);
  const resp = await fetch(api(path), { headers });
  if (resp.status === 304) return null;
  if (!resp.ok) throw new Error(`${resp.status} ${await resp.text()}`);
  const etag = resp.headers.get("ETag");
  if (etag) etags.set(path, etag);
  if (!lines) return resp.json();
  const text = await resp.text();
  return text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l));
}

async function send(method, path, body) {
  const resp = await fetch(api(path), {
    method,
    headers: { Authorization: `Bearer ${config.apiKey}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(data.detail ? `${data.attr ? data.attr + ": " : ""}${data.detail}` : `HTTP ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function statusBadge(status) {
  return el("span", { class: `status ${status || "none"}`, "data-status": status || "" }, status || "no run");
}

async function refreshTasks() {
  const page = await get("/tasks/?limit=50");
  if (!page) return;
  const body = document.querySelector("#tasks tbody");
  body.replaceChildren(
    ...page.results.map((t) =>
      el("tr", { class: "task", "data-task": t.id, onclick: () => t.latest_run && openRun(t.id, t.latest_run.id, t.title) },
        el("td", {}, el("strong", {}, t.slug), " ", t.title),
        el("td", {}, t.repository || "—"),
        el("td", {}, statusBadge(t.latest_run && t.latest_run.status)),
        el("td", {}, el("button", { class: "run", type: "button", onclick: (e) => { e.stopPropagation(); runTask(t); } }, "Run"))))
  );
}

async function runTask(task) {
  try {
    const interactive = document.querySelector("#run-interactive").checked;
    const updated = await send("POST", `/tasks/${task.id}/run/`, interactive ? { mode: "interactive" } : undefined);
    openRun(task.id, updated.latest_run.id, task.title);
    refreshTasks();
  } catch (err) {
    alert(`Could not run the task: ${err.message}`);
  }
}

function openRun(taskId, runId, title) {
  currentRun = { taskId, runId, rendered: 0 };
  // The pane starts empty, so a run seen before must be fetched whole, not answered 304.
  etags.delete(`/tasks/${taskId}/runs/${runId}/`);
  etags.delete(`/tasks/${taskId}/runs/${runId}/logs/`);
  document.querySelector("#run-pane").hidden = false;
  document.querySelector("#run-title").textContent = title;
  document.querySelector("#log").replaceChildren();
  document.querySelector("#run-facts").replaceChildren();
  document.querySelector("#run-controls").hidden = true;
  document.querySelector("#followup").hidden = true;
  for (const id of ["#stop-error", "#followup-error", "#followup-sent"]) document.querySelector(id).hidden = true;
  refreshRun();
}

async function refreshRun() {
  if (!currentRun) return;
  const { taskId, runId } = currentRun;
  const run = await get(`/tasks/${taskId}/runs/${runId}/`);
  if (run) renderRun(run);
  const entries = await get(`/tasks/${taskId}/runs/${runId}/logs/`, true);
  if (entries && currentRun && currentRun.runId === runId) {
    const log = document.querySelector("#log");
    for (const entry of entries.slice(currentRun.rendered)) log.append(renderEntry(entry));
    currentRun.rendered = entries.length;
  }
}

function renderRun(run) {
  const mode = (run.state && run.state.mode) || "background";
  const facts = [["Status", statusBadge(run.status)], ["Mode", mode], ["Stage", run.stage || "—"], ["Run", run.id]];
  if (run.branch) facts.push(["Branch", run.branch]);
  const out = run.output || {};
  if (out.commit_sha) facts.push(["Commit", out.commit_sha]);
  if (out.files_changed !== undefined) facts.push(["Changes", `${out.files_changed} files, +${out.insertions} −${out.deletions}`]);
  if (typeof out.pr_url === "string" && /^https?:\/\//.test(out.pr_url)) {
    facts.push(["Pull request", el("a", { href: out.pr_url, rel: "noopener noreferrer", target: "_blank" }, out.pr_url)]);
  }
  if (out.ci && typeof out.ci === "object") facts.push(["Checks", checksSummary(out.ci)]);
  document.querySelector("#run-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const open = !terminal.has(run.status);
  document.querySelector("#run-controls").hidden = !open;
  document.querySelector("#followup").hidden = !(open && mode === "interactive");
  const error = document.querySelector("#run-error");
  error.hidden = !run.error_message;
  error.textContent = run.error_message || "";
  const artifacts = run.artifacts || [];
  document.querySelector("#artifacts-box").hidden = artifacts.length === 0;
  document.querySelector("#artifacts").replaceChildren(
    ...artifacts.map((a) => el("li", {},
      el("a", { href: `/dashboard/artifacts/${encodeURIComponent(run.id)}/${encodeURIComponent(a.name)}` }, a.name),
      ` (${a.type}, ${a.size} bytes)`)));
}

// checksSummary is the pull request's check state: the round, its state, and
// each check by name with its conclusion, as text.
function checksSummary(ci) {
  const checks = Array.isArray(ci.checks) ? ci.checks : [];
  const box = el("span", { class: "checks", "data-state": String(ci.state || "") },
    el("span", { class: `check-state ${String(ci.state || "")}` }, String(ci.state || "unknown")),
    ` (round ${Number(ci.round) || 1})`);
  for (const c of checks) {
    const result = c.conclusion || c.status || "";
    box.append(el("span", { class: `check ${String(result)}`, title: String(result) }, ` ${String(c.name || "?")}: ${String(result)}`));
  }
  return box;
}

function renderEntry(entry) {
  const n = entry.notification || {};
  const p = n.params || {};
  const time = (entry.timestamp || "").slice(11, 19);
  const li = el("li", {}, el("span", { class: "time" }, time));
  switch (n.method) {
    case "_posthog/console":
      li.classList.add(p.level || "info");
      li.append(String(p.message ?? ""));
      break;
    case "_posthog/progress":
      li.classList.add("progress");
      li.append(`▸ ${p.label || p.step} ${p.status}${p.detail ? ": " + p.detail : ""}`);
      break;
    case "_posthog/run_started":
      li.classList.add("progress");
      li.append(`run started (${p.agentVersion || ""})`);
      break;
    case "_posthog/branch_created":
      li.classList.add("progress");
      li.append(`branch ${p.branch} pushed`);
      break;
    case "_posthog/task_complete":
      li.classList.add("progress");
      li.append(`run complete (${p.stopReason || ""})`);
      break;
    case "_posthog/error":
      li.classList.add("error");
      li.append(`error: ${p.message}`);
      break;
    case "session/update":
      li.append(renderUpdate(p.update || {}));
      break;
    default:
      li.append(n.method || JSON.stringify(entry));
  }
  return li;
}

function renderUpdate(u) {
  const text = (c) => (c && typeof c === "object" ? c.text ?? JSON.stringify(c) : String(c ?? ""));
  switch (u.sessionUpdate) {
    case "agent_message":
    case "agent_message_chunk":
      return el("span", { class: "agent" }, text(u.content));
    case "user_message_chunk":
      return el("span", { class: "user" }, text(u.content));
    case "agent_thought_chunk":
      return el("span", { class: "warn" }, `thinking: ${text(u.content)}`);
    case "tool_call":
      return el("details", {}, el("summary", {}, `🔧 ${u.title || u.kind || "tool"} (${u.status || "started"})`),
        el("pre", {}, JSON.stringify(u.rawInput ?? {}, null, 2)));
    case "tool_call_update":
      return el("details", {}, el("summary", {}, `↳ ${u.toolCallId || "tool"} ${u.status || ""}`),
        el("pre", {}, typeof u.rawOutput === "string" ? u.rawOutput : JSON.stringify(u.rawOutput ?? u.content ?? "", null, 2)));
    case "plan":
      return el("span", { class: "progress" }, `plan: ${JSON.stringify(u.entries ?? u)}`);
    default:
      return el("span", {}, JSON.stringify(u));
  }
}

async function createTask(event) {
  event.preventDefault();
  const form = event.target;
  const error = document.querySelector("#create-error");
  error.hidden = true;
  try {
    await send("POST", "/tasks/", {
      title: form.title.value,
      repository: form.repository.value,
      description: form.description.value,
    });
    form.title.value = "";
    form.description.value = "";
    etags.delete("/tasks/?limit=50");
    await refreshTasks();
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  }
}

// stopRun cancels the open run; the API sends its workflow complete_task.
async function stopRun() {
  if (!currentRun) return;
  const { taskId, runId } = currentRun;
  const error = document.querySelector("#stop-error");
  error.hidden = true;
  try {
    await send("POST", `/tasks/${taskId}/runs/${runId}/cancel/`, { reason: "stopped from the dashboard" });
    await refreshRun();
  } catch (err) {
    error.textContent = `Could not stop the run: ${err.message}`;
    error.hidden = false;
  }
}

// sendFollowup sends the open interactive run a message for its next turn.
async function sendFollowup(event) {
  event.preventDefault();
  if (!currentRun) return;
  const { taskId, runId } = currentRun;
  const form = event.target;
  const error = document.querySelector("#followup-error");
  const sent = document.querySelector("#followup-sent");
  error.hidden = true;
  sent.hidden = true;
  const content = form.message.value;
  if (content.trim() === "") return;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await send("POST", `/tasks/${taskId}/runs/${runId}/command/`,
      { jsonrpc: "2.0", method: "user_message", params: { content }, id: ++commandId });
    form.message.value = "";
    sent.hidden = false;
  } catch (err) {
    error.textContent = `The message was not delivered${err.status ? ` (${err.status})` : ""}: ${err.message}`;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function tick() {
  try {
    await refreshTasks();
    await refreshRun();
  } catch (err) {
    console.error(err);
  }
  setTimeout(tick, 500);
}

document.addEventListener("DOMContentLoaded", async () => {
  config = await (await fetch("/dashboard/config.json")).json();
  document.querySelector("#create").addEventListener("submit", createTask);
  document.querySelector("#stop").addEventListener("click", stopRun);
  document.querySelector("#followup").addEventListener("submit", sendFollowup);
  tick();
});
