// LoRA Cloud sidebar: the Generate section. A ComfyUI on a rented GPU (a "session") for people
// without one: its status and cost, start / stop / open (the remote ComfyUI through the SSH
// tunnel, in a new tab), the newest images its sessions pushed to the bucket, and the workflow
// templates, opened in this canvas.
//
// A module of its own: the sidebar calls generateSection(hooks) when it paints and
// onSessionEvent(detail) on "lora_cloud.session" events. No side effects at import (ComfyUI
// imports every .js file in this folder); state lives here, at module scope, across renders.
// Text from the bucket or the server only ever goes in as text nodes.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { loraCloudRequest as request } from "./api.js";

const BASE = "/lora_cloud/api";
const enc = encodeURIComponent;
const g = {
  current: null, // the live session's view, or null
  outputs: [],
  templates: [],
  problems: [],
  busy: new Set(),
  armed: null, // "start" after one click: a second click rents
  error: null,
  loaded: false,
  loading: false,
  idleMinutes: 20,
  gpu: "",
};
let hooks = { redraw: () => {}, toast: () => {} };
let timer = null;

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const money = (usd) => (typeof usd === "number" ? `$${usd.toFixed(2)}` : "–");
const outputUrl = (o) => api.apiURL(`${BASE}/outputs/${enc(o.session)}/${enc(o.file)}`);

export async function refreshGenerate() {
  g.loading = true;
  try {
    const [sessions, outputs, templates] = await Promise.all([
      request("/sessions"), request("/outputs?limit=24"), request("/templates")]);
    g.current = sessions.current;
    g.outputs = outputs.outputs || [];
    g.problems = outputs.problems || [];
    g.templates = templates.templates || [];
    g.error = null;
  } catch (err) {
    g.error = err.message;
  } finally {
    g.loaded = true;
    g.loading = false;
  }
  schedule();
  hooks.redraw();
}

// While a session lives: its cost and state every 15 s, every 3 s until it is ready.
function schedule() {
  clearTimeout(timer);
  if (!g.current?.live) return;
  timer = setTimeout(refreshGenerate, g.current.state === "ready" ? 15000 : 3000);
}

export function onSessionEvent(detail) {
  const view = detail?.session;
  if (!view) return;
  if (view.live) g.current = { ...(g.current?.id === view.id ? g.current : {}), ...view };
  else if (g.current?.id === view.id) g.current = null;
  schedule();
  hooks.redraw();
}

async function act(key, fn, done) {
  if (g.busy.has(key)) return;
  g.busy.add(key);
  hooks.redraw();
  try {
    const result = await fn();
    if (done) hooks.toast("success", "LoRA Cloud", typeof done === "function" ? done(result) : done);
  } catch (err) {
    hooks.toast("error", "LoRA Cloud", err.message);
  } finally {
    g.busy.delete(key);
    hooks.redraw();
  }
}

function button(key, label, fn, done, extra = {}) {
  return h("button", { class: `lcl-btn ${extra.class || ""}`, "data-action": key, disabled: g.busy.has(key),
                       onclick: () => act(key, fn, done) }, label);
}

function startSession() {
  if (g.armed !== "start") {
    g.armed = "start";
    setTimeout(() => { g.armed = null; hooks.redraw(); }, 4000);
    hooks.redraw();
    return;
  }
  g.armed = null;
  const body = { idle_minutes: Number(g.idleMinutes) || 20 };
  if (g.gpu) body.gpu = g.gpu;
  act("start-session", async () => {
    g.current = await request("/sessions", { method: "POST", body });
    schedule();
    return g.current;
  }, (v) => (v.attached ? `A session is already running: ${v.id}` : `Renting ${v.gpu} at ${money(v.dph)}/hr`));
}

async function openSession(id) {
  // a window opened now keeps the click's permission to open one; it is pointed at the URL once known
  const win = window.open("about:blank", "_blank");
  try {
    const { url } = await request(`/sessions/${enc(id)}/open`, { method: "POST" });
    if (win) win.location.href = url;
    else window.open(url, "_blank");
    return url;
  } catch (err) {
    if (win) win.close();
    throw err;
  }
}

async function loadTemplate(name) {
  const workflow = await request(`/templates/${enc(name)}`);
  await app.loadGraphData(workflow);
  return name;
}

function sessionCard() {
  const s = g.current;
  if (!s) {
    return h("div", { class: "lcl-card", "data-session": "" },
      h("div", { class: "lcl-empty" }, "No remote ComfyUI running. Start one to generate without a GPU here."),
      h("div", { class: "lcl-actions" },
        "GPU ",
        h("select", { class: "lcl-input", "aria-label": "GPU for the session", onchange: (e) => { g.gpu = e.target.value; } },
          ["", "RTX 3090", "RTX 4090", "RTX 5090", "L40S", "A100 SXM4"].map((v) =>
            h("option", { value: v, selected: v === g.gpu }, v || "cheapest 24 GB"))),
        "idle stop ",
        h("input", { class: "lcl-input", type: "number", min: "1", step: "1", value: g.idleMinutes,
                     "aria-label": "Idle minutes before the session stops",
                     onchange: (e) => { g.idleMinutes = e.target.value; } }), " min",
        h("button", { class: `lcl-btn lcl-danger${g.armed === "start" ? " lcl-armed" : ""}`, "data-action": "start-session",
                      disabled: g.busy.has("start-session"), onclick: startSession },
          g.armed === "start" ? "Rent a GPU?" : "Start")));
  }
  const remote = s.remote || {};
  const ready = s.state === "ready";
  return h("div", { class: "lcl-card", "data-session": s.id },
    h("div", { class: "lcl-row" },
      h("strong", null, s.gpu || "GPU"),
      h("span", { class: `lcl-badge lcl-${ready ? "running" : "starting"}`, "data-session-state": s.state }, s.state)),
    h("div", { class: "lcl-meta", "data-session-cost": "" },
      `${money(s.dph)}/hr · spent ${money(s.cost_usd)}`
      + (ready && typeof remote.idle_s === "number" ? ` · idle ${Math.round(remote.idle_s / 60)} min` : "")
      + ` · stops after ${s.idle_minutes} idle min`),
    !ready && remote.message ? h("div", { class: "lcl-meta" }, remote.message) : null,
    s.error ? h("div", { class: "lcl-error" }, s.error) : null,
    h("div", { class: "lcl-actions" },
      ready ? button(`open:${s.id}`, "Open", () => openSession(s.id)) : h("span", { class: "lcl-meta" }, "starting…"),
      button(`stop-session:${s.id}`, "Stop", () => request(`/sessions/${enc(s.id)}/stop`, { method: "POST" })
        .then((v) => { g.current = null; refreshGenerate(); return v; }), "Session stopped; billing ended",
      { class: "lcl-danger" })));
}

function gallery() {
  if (!g.outputs.length) return h("div", { class: "lcl-empty" }, "No generated images yet.");
  return h("div", { class: "lcl-grid", "data-gallery": "" }, g.outputs.map((o) =>
    h("a", { href: outputUrl(o), target: "_blank", rel: "noopener", title: `${o.session}/${o.file}` },
      h("img", { src: outputUrl(o), alt: o.file, loading: "lazy", class: "lcg-thumb" }))));
}

function templateLoader() {
  if (!g.templates.length) return null;
  return h("div", { class: "lcl-actions", "data-templates": "" }, "Templates ",
    g.templates.map((t) => button(`template:${t.name}`, t.title, () => loadTemplate(t.name),
      (name) => `${name} is open in the canvas`)));
}

export function generateSection(newHooks) {
  hooks = { ...hooks, ...newHooks };
  if (!g.loaded && !g.loading) refreshGenerate();
  return h("section", { class: "lcl-section", "data-section": "generate" },
    h("div", { class: "lcl-row" }, h("h3", null, "Generate"),
      h("button", { class: "lcl-btn", "data-action": "refresh-generate", title: "Refresh the Generate section",
                    onclick: refreshGenerate }, "↻")),
    g.error ? h("div", { class: "lcl-error" }, g.error) : null,
    sessionCard(),
    templateLoader(),
    gallery(),
    g.problems.length ? h("div", { class: "lcl-meta" }, `${g.problems.length} output(s) could not be shown`) : null);
}
