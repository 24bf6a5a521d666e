// LoRA Cloud sidebar section "Generate": a ComfyUI on a rented GPU (a "session") for people
// without one. Its status and cost, start / stop / open (the remote ComfyUI through the SSH
// tunnel, in a new tab), the newest images the sessions pushed to the bucket, and the workflow
// templates, opened in this canvas. Routes: comfy/routes_sessions.py; service: sessions.py.
//
// A section module ({id, title, render, badge, css}); no side effects at import. Its own data
// lives here at module scope (it outlives renders); lora_cloud.js forwards "lora_cloud.session"
// events to onSessionEvent. Text from the bucket or the server only ever goes in as text nodes.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { loraCloudRequest as request } from "./api.js";
import { loraCloudState as state } from "./state.js";
import { button, dangerButton, empty, h, money, section, select } from "./ui.js";

const BASE = "/lora_cloud/api";
const enc = encodeURIComponent;
const GPUS = [["", "cheapest 24 GB"], "RTX 3090", "RTX 4090", "RTX 5090", "L40S", "A100 SXM4"];
const g = {
  current: null, // the live session's view, or null
  outputs: [],
  templates: [],
  problems: [],
  error: null,
  loaded: false,
  loading: false,
  idleMinutes: 20,
  gpu: "",
};
let timer = null;

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
  state.changed();
}

// While a session lives: its cost and state every 15 s, every 3 s until it is ready.
function schedule() {
  clearTimeout(timer);
  if (!g.current?.live) return;
  timer = setTimeout(refreshGenerate, g.current.state === "ready" ? 15000 : 3000);
}

// "lora_cloud.session" events: {session: view} when a session starts, is ready, or ends.
export function onSessionEvent(detail) {
  const view = detail?.session;
  if (!view) return;
  if (view.live) g.current = { ...(g.current?.id === view.id ? g.current : {}), ...view };
  else if (g.current?.id === view.id) g.current = null;
  schedule();
  state.changed();
}

async function start() {
  const body = { idle_minutes: Number(g.idleMinutes) || 20 };
  if (g.gpu) body.gpu = g.gpu;
  g.current = await request("/sessions", { method: "POST", body });
  schedule();
  return g.current;
}

async function openSession(id) {
  // a window opened during the click keeps its permission to open; it is pointed at the URL once known
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
  await app.loadGraphData(await request(`/templates/${enc(name)}`));
  return name;
}

function sessionCard() {
  const s = g.current;
  if (!s) {
    return h("div", { class: "lcl-card", "data-session": "" },
      empty("No remote ComfyUI running. Start one to generate without a GPU here."),
      h("div", { class: "lcl-actions" },
        select("GPU for the session", g.gpu, GPUS, (v) => { g.gpu = v; }),
        "idle stop",
        h("input", { class: "lcl-input", type: "number", min: "1", step: "1", value: g.idleMinutes,
                     "aria-label": "Idle minutes before the session stops",
                     onchange: (e) => { g.idleMinutes = e.target.value; } }), "min",
        dangerButton("start-session", "Start", "Rent a GPU?", start,
          (v) => (v.attached ? `A session is already running: ${v.id}` : `Renting ${v.gpu} at ${money(v.dph)}/hr`))));
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
      { class: "lcl-btn lcl-danger" })));
}

function gallery() {
  if (!g.outputs.length) return empty("No generated images yet.");
  return h("div", { class: "lcl-grid", "data-gallery": "" }, g.outputs.map((o) =>
    h("a", { href: outputUrl(o), target: "_blank", rel: "noopener", title: `${o.session}/${o.file}` },
      h("img", { src: outputUrl(o), alt: o.file, loading: "lazy", class: "lcg-thumb" }))));
}

function templateLoader() {
  if (!g.templates.length) return null;
  return h("div", { class: "lcl-actions", "data-templates": "" }, "Open in the canvas:",
    g.templates.map((t) => button(`template:${t.name}`, t.title, () => loadTemplate(t.name),
      (name) => `${name} is open in the canvas`)));
}

function render() {
  if (!g.loaded && !g.loading) refreshGenerate();
  return [section("Generate", "generate",
    h("div", { class: "lcl-actions" },
      h("button", { class: "lcl-btn", "data-action": "refresh-generate", title: "Refresh the Generate section",
                    onclick: refreshGenerate }, "↻ Refresh")),
    g.error ? h("div", { class: "lcl-error" }, g.error) : null,
    sessionCard(),
    templateLoader(),
    gallery(),
    g.problems.length ? h("div", { class: "lcl-meta" }, `${g.problems.length} output(s) could not be shown`) : null)];
}

export const generateSection = { id: "generate", title: "Generate", render,
  badge: () => (g.current?.live ? "1" : null),
  css: ".lcg-thumb{width:100%;aspect-ratio:1;object-fit:cover;border-radius:3px}" };
