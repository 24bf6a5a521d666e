// LoRA Cloud sidebar: the entry module. Plain JavaScript ES modules, no build step; works on
// ComfyUI frontend 1.27 and 1.58.
//
// - ONE ComfyUI sidebar tab, registered in setup(); websocket listeners are registered there too,
//   once. Inside it, one tab per section (Instances, Datasets, Training, LoRAs, Generate), each
//   its own module exporting {id, title, render() -> [Node], badge?() -> string|null, css?}.
//   To add a section: write web/<section>.js and add it to SECTIONS below (one line).
// - render(el) runs on every show with a fresh element: it appends one persistent root and
//   rebuilds it from the state singleton (state.js), so nothing is lost between tab switches.
// - Text that comes from the bucket (names, captions, errors) only ever goes in as text nodes.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { refresh, refreshCosts } from "./data.js";
import { datasetsSection } from "./datasets.js";
import { dialogCss, dialogElement, paintDialog } from "./dialog.js";
import { generateSection, onSessionEvent } from "./generate.js";
import { instancesSection } from "./instances.js";
import { lorasSection } from "./loras.js";
import { loraCloudState as state } from "./state.js";
import { trainingSection } from "./training.js";
import { h, toast } from "./ui.js";

const TAB_ID = "lora-cloud";
const EVENTS = { run: "lora_cloud.run", instance: "lora_cloud.instance", budget: "lora_cloud.budget",
                 notify: "lora_cloud.notify", guard: "lora_cloud.guard" };

export const SECTIONS = [instancesSection, datasetsSection, trainingSection, lorasSection, generateSection];

// Bucket entries a listing skipped (a rented host can write anything there): said, never hidden.
function problemsNote() {
  const problems = state.problems || [];
  if (!problems.length) return null;
  return h("details", { class: "lcl-warning", "data-problems": problems.length },
    h("summary", null, `${problems.length} item${problems.length > 1 ? "s" : ""} in the bucket could not be read`
      + " and are not shown"),
    h("ul", null, problems.slice(0, 20).map((p) => h("li", null, `${p.entry}: ${p.message}`))));
}

function tabBar() {
  return h("nav", { class: "lcl-tabs", role: "tablist" }, SECTIONS.map((s) => {
    const badge = s.badge ? s.badge() : null;
    return h("button", {
      class: `lcl-tab${state.tab === s.id ? " lcl-tab-on" : ""}`, role: "tab", "data-tab": s.id,
      "aria-selected": state.tab === s.id ? "true" : "false",
      onclick: () => state.set({ tab: s.id }),
    }, s.title, badge ? h("span", { class: "lcl-tab-badge" }, badge) : null);
  }));
}

// ---- the tab ------------------------------------------------------------------------------------
const root = h("div", { class: "lcl-root" });

let waitingForBlur = false;

function draw() {
  const focused = document.activeElement;
  const typing = focused && (focused.tagName === "INPUT" || focused.tagName === "TEXTAREA")
    && focused.type !== "checkbox" && (root.contains(focused) || dialogElement().contains(focused));
  if (typing) {
    // The user is typing: repaint once they have left the field, a little later, so that a
    // click on Save that took the focus lands on the button it was aimed at.
    if (!waitingForBlur) {
      waitingForBlur = true;
      focused.addEventListener("blur", () => { waitingForBlur = false; setTimeout(draw, 400); }, { once: true });
    }
    return;
  }
  paintDialog();
  if (root.isConnected) paint();
}

function paint() {
  const scroll = root.scrollTop;
  const current = SECTIONS.find((s) => s.id === state.tab) || SECTIONS[0];
  const parts = [
    h("div", { class: "lcl-header" }, h("span", null, "LoRA Cloud"),
      h("button", { class: "lcl-btn", onclick: refresh, title: "Refresh" }, "↻")),
    tabBar(),
    state.error ? h("div", { class: "lcl-error", "data-error": "" }, state.error) : null,
    problemsNote(),
    h("div", { class: "lcl-body", "data-current": current.id }, current.render()),
  ];
  root.replaceChildren(...parts.flat().filter(Boolean));
  root.scrollTop = scroll;
}

const STYLE = `
.lcl-root{display:flex;flex-direction:column;gap:.6rem;padding:.5rem .75rem;height:100%;overflow:auto;font-size:13px;color:var(--fg-color,#ddd);box-sizing:border-box;min-width:0}
.lcl-header{display:flex;justify-content:space-between;align-items:center;font-weight:600;font-size:15px}
.lcl-tabs{display:flex;flex-wrap:wrap;gap:.25rem;border-bottom:1px solid var(--border-color,#444);padding-bottom:.35rem}
.lcl-tab{background:none;border:1px solid transparent;border-radius:4px;color:inherit;cursor:pointer;padding:.15rem .45rem;font-size:12px;opacity:.75}
.lcl-tab-on{border-color:var(--border-color,#555);background:var(--comfy-input-bg,#333);opacity:1}
.lcl-tab-badge{margin-left:.3rem;font-size:10px;background:#1f6f3f;border-radius:8px;padding:0 .35rem}
.lcl-body{display:flex;flex-direction:column;gap:.6rem;min-width:0}
.lcl-section h3{margin:.25rem 0 .4rem;font-size:12px;text-transform:uppercase;letter-spacing:.05em;opacity:.7}
.lcl-card{border:1px solid var(--border-color,#444);border-radius:6px;padding:.45rem .55rem;margin-bottom:.4rem;background:var(--comfy-menu-bg,#222);min-width:0}
.lcl-row{display:flex;justify-content:space-between;align-items:center;gap:.5rem;flex-wrap:wrap}
.lcl-meta{opacity:.75;font-size:12px;margin-top:.15rem}
.lcl-empty{opacity:.6;font-style:italic}
.lcl-warning{color:#d29922;font-size:12px;word-break:break-word}.lcl-warning ul{margin:.2rem 0 0 1rem;padding:0}
.lcl-error{color:#ff7b72;font-size:12px;margin-top:.2rem;white-space:pre-wrap}
.lcl-actions{display:flex;gap:.35rem;align-items:center;margin-top:.35rem;flex-wrap:wrap;min-width:0}
.lcl-btn{background:var(--comfy-input-bg,#333);color:inherit;border:1px solid var(--border-color,#555);border-radius:4px;padding:.15rem .55rem;cursor:pointer;font-size:12px}
.lcl-btn:disabled{opacity:.5;cursor:wait}.lcl-btn-on{border-color:#58a6ff;background:rgba(88,166,255,.18)}
.lcl-danger{border-color:#a33}.lcl-armed{background:#a33;color:#fff}
.lcl-link{background:none;border:none;color:inherit;cursor:pointer;padding:0;font-weight:600;text-align:left}
.lcl-input{width:5rem;max-width:100%;min-width:0;background:var(--comfy-input-bg,#333);color:inherit;border:1px solid var(--border-color,#555);border-radius:4px;padding:.1rem .3rem;box-sizing:border-box}
select.lcl-input{width:auto;max-width:100%}.lcl-wide{flex:1 1 8rem}
.lcl-badge{font-size:11px;border-radius:10px;padding:0 .45rem;background:#555}
.lcl-running,.lcl-training{background:#1f6f3f}.lcl-loading,.lcl-creating,.lcl-starting,.lcl-launching,.lcl-uploading,.lcl-pending{background:#7a5b12}
.lcl-failed,.lcl-lost,.lcl-timed_out{background:#8b2323}.lcl-done{background:#1d4f91}
.lcl-bar{height:6px;border-radius:3px;background:#444;overflow:hidden;margin-top:.3rem}
.lcl-fill{height:100%}.lcl-fill.lcl-ok{background:#3fb950}.lcl-fill.lcl-warn{background:#d29922}.lcl-fill.lcl-over{background:#f85149}
.lcl-loss{width:100%;height:56px;color:#58a6ff;margin-top:.3rem;background:rgba(255,255,255,.03)}
.lcl-series-1{color:#f0883e}.lcl-series-2{color:#a371f7}.lcl-series-3{color:#3fb950}
.lcl-samples{display:flex;gap:.3rem;margin-top:.35rem;flex-wrap:wrap}.lcl-samples img{width:56px;height:56px;object-fit:cover;border-radius:3px}
.lcl-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(72px,1fr));gap:.4rem;margin-top:.4rem}
.lcl-figure{margin:0}.lcl-figure img{width:100%;aspect-ratio:1;object-fit:cover;border-radius:3px}
.lcl-caption{font-size:11px;opacity:.8;word-break:break-word;max-height:4.2em;overflow:hidden}
.lcl-logs{max-height:12rem;overflow:auto;font-size:11px;background:#111;padding:.4rem;border-radius:4px;white-space:pre-wrap}
`;

// Budget news from the pack's poller ("warning", "exceeded", "changed") and from the watchdog
// ("warning", "enforced", "enforce_failed"): everything but a change of caps is a toast.
const BUDGET_SEVERITY = { warning: "warn", exceeded: "error", enforced: "error", enforce_failed: "error" };

function onBudget(event) {
  const data = event.detail || {};
  const severity = BUDGET_SEVERITY[data.kind];
  if (severity && data.message) toast(severity, "LoRA Cloud budget", data.message);
  refreshCosts();
  if (data.kind === "enforced") refresh(); // an instance was destroyed
}

app.registerExtension({
  name: "LoraCloud.Sidebar",
  setup() {
    const css = STYLE + dialogCss + SECTIONS.map((s) => s.css || "").join("\n");
    document.head.append(h("style", { "data-lora-cloud": "" }, css));
    state.addEventListener("change", draw);
    api.addEventListener(EVENTS.run, (event) => {
      const before = state.runs.get(event.detail.id);
      state.upsertRun(event.detail);
      // a run that just ended took its instance with it: show that now, not a guard round later
      if (before?.live && event.detail.live === false) refresh();
    });
    // notifications (service/notify.py): run done or failed, preempted, budget, idle session
    api.addEventListener(EVENTS.notify, (event) => {
      const n = event.detail || {};
      toast(n.severity || "info", n.title || "LoRA Cloud", n.message || "");
    });
    // what the guard could not do or had to work around (a damaged settings file, a clock off the
    // bucket's, an instance of another bucket kept): the server sends each once, until it clears
    api.addEventListener(EVENTS.guard, (event) => {
      const g = event.detail || {};
      if (g.kind === "problem" && g.message) toast("warn", "LoRA Cloud guard", g.message);
    });
    api.addEventListener(EVENTS.instance, (event) => {
      state.set({ instances: event.detail.instances || [] });
      refreshCosts();
    });
    api.addEventListener(EVENTS.budget, onBudget);
    api.addEventListener("lora_cloud.session", (event) => onSessionEvent(event.detail)); // generate.js
    app.extensionManager.registerSidebarTab({
      id: TAB_ID,
      icon: "pi pi-cloud",
      title: "LoRA Cloud",
      tooltip: "LoRA Cloud: GPUs, costs and training runs",
      type: "custom",
      iconBadge: () => {
        const live = state.liveRuns().length;
        return live ? String(live) : null;
      },
      render(el) {
        el.append(root);
        paint();
        refresh();
      },
      destroy() {
        // Not reliable in ComfyUI (contract §7), and nothing needs it: the root and the
        // listeners are module-level and survive until the page goes.
      },
    });
  },
});
