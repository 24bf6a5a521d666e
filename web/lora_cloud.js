// LoRA Cloud sidebar: the entry module. Plain JavaScript ES modules, no build step; works on
// ComfyUI frontend 1.27 and 1.58.
//
// - ONE ComfyUI sidebar tab, registered in setup(); websocket listeners are registered there too,
//   once. Inside it, one tab per section (Instances, Datasets, Training, LoRAs, Generate), each
//   its own module exporting {id, title, render() -> [Node], stores, badge?() -> string|null, load?(),
//   setup?() (once, from the extension's setup)};
//   their styles are in lora_cloud.css, the pack's one stylesheet.
//   To add a section: write web/<section>.js and add it to SECTIONS below (one line).
// - The data lives in one store per noun (stores.js, built in live.js), which fetch through api.js
//   and follow the server's events; the view state in state.js. Any change schedules one paint,
//   which builds the section from them and patches the persistent root (patch.js): only what
//   changed is touched, so focus, the caret and a half-typed value survive live updates.
// - Text that comes from the bucket (names, captions, errors) only ever goes in as text nodes.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { datasetsSection } from "./datasets.js";
import { paintDialog } from "./dialog.js";
import { generateSection } from "./generate.js";
import { instancesSection } from "./instances.js";
import { stores } from "./live.js";
import { lorasSection } from "./loras.js";
import { patch } from "./patch.js";
import { loraCloudState as state } from "./state.js";
import { listenAll } from "./stores.js";
import { trainingSection } from "./training.js";
import { h, toast } from "./ui.js";

const TAB_ID = "lora-cloud";

// Each section names the stores it shows ({stores: [...]}: it is painted again when one of them
// changes) and may load what only it needs ({load()}) when it is shown; render() builds from the
// stores and the view state and never fetches.
export const SECTIONS = [instancesSection, datasetsSection, trainingSection, lorasSection, generateSection];

// What every section's header needs: the listings and the money.
export function refresh() {
  return Promise.all([stores.instances.load(), stores.runs.load(), stores.library.load()]);
}

function current() {
  return SECTIONS.find((s) => s.id === state.tab) || SECTIONS[0];
}

function show(section) {
  if (section.load) section.load();
}

// Bucket entries a listing skipped (a rented host can write anything there): said, never hidden.
function problemsNote() {
  const problems = [...stores.runs.problems, ...stores.library.problems];
  if (!problems.length) return null;
  return h("details", { class: "lcl-warning", "data-problems": problems.length },
    h("summary", null, `${problems.length} item${problems.length > 1 ? "s" : ""} in the bucket could not be read`
      + " and are not shown"),
    h("ul", null, problems.slice(0, 20).map((p) => h("li", null, `${p.entry}: ${p.message}`))));
}

// The section tabs: one tab stop, arrow keys (and Home, End) move between them.
function selectTab(id, focus) {
  state.set({ tab: id });
  show(current());
  if (focus) root.querySelector(`[data-tab="${id}"]`)?.focus();
}

function onTabKey(event) {
  const i = SECTIONS.findIndex((s) => s.id === state.tab);
  const to = { ArrowRight: i + 1, ArrowDown: i + 1, ArrowLeft: i - 1, ArrowUp: i - 1, Home: 0, End: SECTIONS.length - 1 }[event.key];
  if (to === undefined) return;
  event.preventDefault();
  selectTab(SECTIONS[(to + SECTIONS.length) % SECTIONS.length].id, true);
}

function tabBar() {
  return h("nav", { class: "lcl-tabs", role: "tablist", "aria-label": "LoRA Cloud sections", onkeydown: onTabKey },
    SECTIONS.map((s) => {
      const badge = s.badge ? s.badge() : null;
      const on = state.tab === s.id;
      return h("button", {
        class: `lcl-tab${on ? " lcl-tab-on" : ""}`, role: "tab", "data-tab": s.id, id: `lcl-tab-${s.id}`,
        "aria-selected": on ? "true" : "false", "aria-controls": "lcl-panel", tabindex: on ? "0" : "-1",
        onclick: () => selectTab(s.id, false),
      }, s.title, badge ? h("span", { class: "lcl-tab-badge" }, badge) : null);
    }));
}

// ---- the tab ------------------------------------------------------------------------------------
// The header (title, tabs with their badges, errors, skipped entries) and the current section are
// patched apart: each when a store it shows changed, or the view did.
const HEADER_STORES = ["instances", "runs", "library", "sessions"];
const top = h("div", { class: "lcl-top" });
const body = h("div", { class: "lcl-body", role: "tabpanel", id: "lcl-panel" });
const root = h("div", { class: "lcl-root" }, top, body);

// Changes are painted together once the current task is done: a burst of events is one paint.
const dirty = { header: false, body: false };
let queued = false;
function schedule(parts = { header: true, body: true }) {
  dirty.header ||= parts.header;
  dirty.body ||= parts.body;
  if (queued) return;
  queued = true;
  queueMicrotask(() => {
    queued = false;
    paintDialog();
    if (root.isConnected) paint();
  });
}

// A store changed: the parts of the sidebar that show it are painted again.
function storeChanged(name) {
  schedule({ header: HEADER_STORES.includes(name), body: (current().stores || []).includes(name) });
}

function paint() {
  const section = current();
  if (dirty.header) {
    const error = [stores.instances, stores.runs, stores.library].map((s) => s.error).find(Boolean);
    patch(top, [
      h("div", { class: "lcl-header" }, h("span", null, "LoRA Cloud"),
        h("button", { class: "lcl-btn", "data-action": "refresh", onclick: refresh, title: "Refresh" }, "↻")),
      tabBar(),
      error ? h("div", { class: "lcl-error", "data-error": "" }, error) : null,
      problemsNote(),
    ]);
  }
  if (dirty.body || body.getAttribute("data-current") !== section.id) {
    body.setAttribute("data-current", section.id);
    body.setAttribute("aria-labelledby", `lcl-tab-${section.id}`);
    patch(body, [h("div", { class: "lcl-section-body", "data-key": `section:${section.id}` }, section.render())]);
  }
  dirty.header = false;
  dirty.body = false;
}

app.registerExtension({
  name: "LoraCloud.Sidebar",
  setup() {
    // the pack's one stylesheet, served beside this module
    document.head.append(h("link", { rel: "stylesheet", href: new URL("./lora_cloud.css", import.meta.url).href,
                                     "data-lora-cloud": "" }));
    // every change of a store or of the view is painted; the sections' stores follow server events
    state.addEventListener("change", () => schedule());
    for (const [name, store] of Object.entries(stores)) store.subscribe(() => storeChanged(name));
    stores.notifications.onNotice((n) => toast(n.severity, n.title, n.message));
    listenAll(stores, api);
    for (const section of SECTIONS) if (section.setup) section.setup();
    app.extensionManager.registerSidebarTab({
      id: TAB_ID,
      icon: "pi pi-cloud",
      title: "LoRA Cloud",
      tooltip: "LoRA Cloud: GPUs, costs and training runs",
      type: "custom",
      iconBadge: () => {
        const live = stores.runs.live().length;
        return live ? String(live) : null;
      },
      render(el) {
        el.append(root);
        schedule();
        refresh();
        show(current());
      },
      destroy() {
        // ComfyUI does not always call it when a tab closes, and nothing needs it: the root and the
        // listeners are module-level and survive until the page goes.
      },
    });
  },
});
