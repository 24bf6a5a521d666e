// LoRA Cloud sidebar section "Generate": a ComfyUI on a rented GPU (a "session") for people
// without one. Its status and cost, start / stop / open (the remote ComfyUI through the SSH
// tunnel, in a new tab), the newest images the sessions pushed to the bucket, and the workflow
// templates, opened in this canvas. Routes: comfy/routes/sessions.py; service: sessions.py.
//
// A section module ({id, title, render, stores, badge, load}); no side effects at import. Its data is
// the sessions store (stores.js), which follows the session events (EVENTS.session: no polling). Text
// from the bucket or the server only ever goes in as text nodes.
import { app } from "../../scripts/app.js";
import { loraCloudApi as lc, stores } from "./live.js";
import { loraCloudState as state } from "./state.js";
import { button, dangerButton, empty, h, money, section, select } from "./ui.js";

const GPUS = [["", "cheapest 24 GB"], "RTX 3090", "RTX 4090", "RTX 5090", "L40S", "A100 SXM4"];
const { sessions } = stores;

function start() {
  const form = state.session;
  const body = { idle_minutes: Number(form.idleMinutes) || 20 };
  if (form.gpu) body.gpu = form.gpu;
  return sessions.start(body);
}

async function openSession(id) {
  // a window opened during the click keeps its permission to open; it is pointed at the URL once known
  const win = window.open("about:blank", "_blank");
  try {
    const { url } = await lc.openSession(id);
    if (win) win.location.href = url;
    else window.open(url, "_blank");
    return url;
  } catch (err) {
    if (win) win.close();
    throw err;
  }
}

async function loadTemplate(name) {
  await app.loadGraphData(await lc.templateGraph(name));
  return name;
}

function sessionCard() {
  const s = sessions.current;
  const form = state.session;
  if (!s) {
    return h("div", { class: "lcl-card", "data-session": "" },
      empty("No remote ComfyUI running. Start one to generate without a GPU here."),
      h("div", { class: "lcl-actions" },
        select("GPU for the session", form.gpu, GPUS, (v) => { form.gpu = v; }),
        "idle stop",
        h("input", { class: "lcl-input", type: "number", min: "1", step: "1", value: form.idleMinutes,
                     "aria-label": "Idle minutes before the session stops",
                     onchange: (e) => { form.idleMinutes = e.target.value; } }), "min",
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
      `${money(s.dph)}/hr · spent ${money(sessions.costNow())}`
      + (ready && typeof remote.idle_s === "number" ? ` · idle ${Math.round(remote.idle_s / 60)} min` : "")
      + ` · stops after ${s.idle_minutes} idle min`),
    !ready && remote.message ? h("div", { class: "lcl-meta" }, remote.message) : null,
    s.error ? h("div", { class: "lcl-error" }, s.error) : null,
    h("div", { class: "lcl-actions" },
      ready ? button(`open:${s.id}`, "Open", () => openSession(s.id)) : h("span", { class: "lcl-meta" }, "starting…"),
      button(`stop-session:${s.id}`, "Stop", () => sessions.stop(s.id), "Session stopped; billing ended",
      { class: "lcl-btn lcl-danger" })));
}

function gallery() {
  if (!sessions.outputs.length) return empty("No generated images yet.");
  return h("div", { class: "lcl-grid", "data-gallery": "" }, sessions.outputs.map((o) =>
    h("a", { href: lc.outputUrl(o.session, o.file), target: "_blank", rel: "noopener", title: `${o.session}/${o.file}`,
             "data-key": `${o.session}/${o.file}` },
      h("img", { src: lc.outputUrl(o.session, o.file), alt: o.file, loading: "lazy", class: "lcg-thumb" }))));
}

function templateLoader() {
  if (!sessions.templates.length) return null;
  return h("div", { class: "lcl-actions", "data-templates": "" }, "Open in the canvas:",
    sessions.templates.map((t) => button(`template:${t.name}`, t.title, () => loadTemplate(t.name),
      (name) => `${name} is open in the canvas`)));
}

function render() {
  return [section("Generate", "generate",
    h("div", { class: "lcl-actions" },
      h("button", { class: "lcl-btn", "data-action": "refresh-generate", title: "Refresh the Generate section",
                    onclick: () => sessions.load() }, "↻ Refresh")),
    sessions.error ? h("div", { class: "lcl-error" }, sessions.error) : null,
    sessionCard(),
    templateLoader(),
    gallery(),
    sessions.problems.length ? h("div", { class: "lcl-meta" }, `${sessions.problems.length} output(s) could not be shown`) : null)];
}

export const generateSection = { id: "generate", title: "Generate", render, stores: ["sessions"],
  badge: () => (sessions.current?.live ? "1" : null),
  load: () => (sessions.loaded ? null : sessions.load()) };
