// LoRA Cloud sidebar: rented GPUs, what they cost, training runs with live progress, datasets
// and LoRAs. Plain JavaScript, no build step; works on ComfyUI frontend 1.27 and 1.58.
//
// - ONE tab, registered in setup(); websocket listeners are registered there too, once.
// - render(el) runs on every show with a fresh element: it appends one persistent root and
//   rebuilds it from the state singleton (state.js), so nothing is lost between tab switches.
// - Text that comes from the bucket (names, captions, errors) only ever goes in as text nodes.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { loraCloudApi as lc } from "./api.js";
import { loraCloudState as state } from "./state.js";
import { attemptsBlock } from "./attempts.js";
import { generateSection, onSessionEvent } from "./generate.js";

const TAB_ID = "lora-cloud";
const EVENTS = { run: "lora_cloud.run", instance: "lora_cloud.instance", budget: "lora_cloud.budget" };
const SVG_NS = "http://www.w3.org/2000/svg";

// ---- small DOM helpers ------------------------------------------------------------------------
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

function duration(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  if (hours) return `${hours}h ${String(minutes).padStart(2, "0")}m`;
  return minutes ? `${minutes}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

function toast(severity, summary, detail) {
  try {
    app.extensionManager.toast.add({ severity, summary, detail, life: severity === "error" ? 8000 : 4000 });
  } catch (err) {
    console.warn("LoRA Cloud:", summary, detail, err);
  }
}

// Run an action once at a time per key, show failures as toasts, then refresh.
async function act(key, fn, done) {
  if (state.busy.has(key)) return;
  state.busy.add(key);
  state.changed();
  try {
    const result = await fn();
    if (done) toast("success", "LoRA Cloud", typeof done === "function" ? done(result) : done);
  } catch (err) {
    toast("error", "LoRA Cloud", err.message);
  } finally {
    state.busy.delete(key);
    state.changed();
  }
}

// A button that wants a second click within a few seconds before it destroys or deletes.
const armed = new Map();
function dangerButton(key, label, confirmLabel, fn, done) {
  const isArmed = armed.has(key);
  return h("button", {
    class: `lcl-btn lcl-danger${isArmed ? " lcl-armed" : ""}`,
    "data-action": key,
    disabled: state.busy.has(key),
    onclick: () => {
      if (!armed.has(key)) {
        armed.set(key, setTimeout(() => { armed.delete(key); state.changed(); }, 4000));
        state.changed();
        return;
      }
      clearTimeout(armed.get(key));
      armed.delete(key);
      act(key, fn, done);
    },
  }, isArmed ? confirmLabel : label);
}

function button(key, label, fn, done) {
  return h("button", { class: "lcl-btn", "data-action": key, disabled: state.busy.has(key),
                       onclick: () => act(key, fn, done) }, label);
}

// ---- data ---------------------------------------------------------------------------------------
async function refresh() {
  try {
    const [instances, costs, runList] = await Promise.all([lc.instances(), lc.costs(), lc.runListing()]);
    state.set({ instances, costs, error: null });
    state.setRuns(runList.runs);
    for (const run of runList.runs.filter((r) => r.live)) state.upsertRun(await lc.run(run.id));
    const [datasetList, loraList] = await Promise.all([lc.datasetListing(), lc.loraListing()]);
    const problems = [runList, datasetList, loraList].flatMap((l) => l.problems || []);
    state.set({ datasets: datasetList.datasets, loras: loraList.loras, problems });
  } catch (err) {
    state.set({ error: err.message });
  }
}

async function refreshCosts() {
  try {
    state.set({ costs: await lc.costs() });
  } catch (err) {
    state.set({ error: err.message });
  }
}

// ---- sections -----------------------------------------------------------------------------------
function instancesSection() {
  const since = (Date.now() - state.instancesAt) / 1000;
  const rows = state.instances.map((inst) => {
    const running = ["running", "loading", "creating"].includes(inst.state);
    const uptime = inst.uptime_seconds + (running ? since : 0);
    const logs = state.logs.get(inst.id);
    return h("div", { class: "lcl-card", "data-instance": inst.id },
      h("div", { class: "lcl-row" },
        h("strong", null, inst.num_gpus > 1 ? `${inst.num_gpus}× ${inst.gpu_name}` : inst.gpu_name || "GPU"),
        h("span", { class: `lcl-badge lcl-${inst.state}` }, inst.state)),
      h("div", { class: "lcl-meta" },
        `${money(inst.dph_total)}/hr · up ${duration(uptime)} · spent ${money(inst.cost_usd)}`,
        inst.run_id ? ` · run ${inst.run_id}` : ""),
      inst.status_msg ? h("div", { class: "lcl-meta" }, inst.status_msg) : null,
      h("div", { class: "lcl-actions" },
        inst.state === "running"
          ? button(`stop:${inst.id}`, "Stop", () => lc.stopInstance(inst.id).then(refresh), "Instance stopped")
          : null,
        dangerButton(`destroy:${inst.id}`, "Destroy", "Really destroy?",
          () => lc.destroyInstance(inst.id).then(refresh), "Instance destroyed"),
        button(`logs:${inst.id}`, logs != null ? "Hide logs" : "Logs", async () => {
          if (state.logs.has(inst.id)) state.logs.delete(inst.id);
          else state.logs.set(inst.id, await lc.instanceLogs(inst.id));
        })),
      logs != null ? h("pre", { class: "lcl-logs" }, logs) : null);
  });
  return section("Instances", "instances",
    rows.length ? rows : h("div", { class: "lcl-empty" }, "No rented GPUs. Nothing is billing."),
    quickLaunch());
}

// Train a stored dataset on the cheapest fitting vast.ai offer (the same path as the Launch node;
// launching the same dataset and preset again re-attaches instead of renting twice).
const quick = { dataset: "", lora_type: "character" };

function quickLaunch() {
  // only complete datasets can be trained (the server refuses the others too)
  const trainable = state.datasets.filter((d) => d.complete !== false);
  if (!trainable.length) return null;
  if (!trainable.some((d) => d.name === quick.dataset)) quick.dataset = trainable[0].name;
  const select = (label, value, options, onchange) => h("select", {
    class: "lcl-input", "aria-label": label, onchange: (e) => onchange(e.target.value),
  }, options.map((o) => h("option", { value: o, selected: o === value }, o)));
  return h("div", { class: "lcl-actions", "data-quick-launch": "" }, "Quick launch ",
    select("Dataset to train", quick.dataset, trainable.map((d) => d.name), (v) => { quick.dataset = v; }),
    select("LoRA type", quick.lora_type, ["character", "style", "concept"], (v) => { quick.lora_type = v; }),
    dangerButton("launch", "Train", "Rent a GPU?",
      () => lc.startRun({ dataset: quick.dataset, lora_type: quick.lora_type }).then(async (r) => {
        await refresh();
        return r;
      }),
      (r) => (r.attached ? `Already running: ${r.run_id}`
        : `Run ${r.run_id} on ${r.gpu}` + (r.expected_usd != null ? ` (about ${money(r.expected_usd)})` : ""))));
}

function costsSection() {
  const c = state.costs;
  if (!c) return section("Costs", "costs", h("div", { class: "lcl-empty" }, "…"));
  const cap = c.budgets.max_month_usd;
  const fraction = Math.min(1, c.month_fraction ?? 0);
  const level = (c.month_fraction ?? 0) >= 1 ? "over" : (c.month_fraction ?? 0) >= 0.8 ? "warn" : "ok";
  const input = h("input", { type: "number", min: "0", step: "1", value: cap, class: "lcl-input",
                             "aria-label": "Monthly budget in dollars" });
  return section("Costs", "costs",
    h("div", { class: "lcl-row" }, h("span", null, "Today"), h("strong", { "data-cost": "today" }, money(c.today_usd))),
    h("div", { class: "lcl-row" }, h("span", null, "This month"),
      h("strong", { "data-cost": "month" }, `${money(c.month_usd)} of ${money(cap)}`)),
    h("div", { class: "lcl-bar", title: `${Math.round(fraction * 100)}% of the monthly budget` },
      h("div", { class: `lcl-fill lcl-${level}`, style: `width:${(fraction * 100).toFixed(1)}%` })),
    h("div", { class: "lcl-meta" },
      `Caps: ${money(c.budgets.max_dph)}/hr per GPU · ${money(c.budgets.max_run_usd)} per run · `
      + `${c.budgets.max_run_hours}h per run`),
    h("div", { class: "lcl-actions" }, "Monthly budget $", input,
      button("budget", "Save", () => {
        const value = Number(input.value);
        if (!isFinite(value) || value < 0) throw new Error("the budget must be a number ≥ 0");
        return lc.setBudgets({ max_month_usd: value }).then(refreshCosts);
      }, "Budget saved")));
}

function lossGraph(points) {
  const width = 240;
  const height = 56;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "lcl-loss");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "loss by step");
  if (points.length < 2) return svg;
  const steps = points.map((p) => p[0]);
  const losses = points.map((p) => p[1]);
  const [s0, s1] = [Math.min(...steps), Math.max(...steps)];
  const [l0, l1] = [Math.min(...losses), Math.max(...losses)];
  const x = (s) => ((s - s0) / (s1 - s0 || 1)) * (width - 4) + 2;
  const y = (l) => height - 2 - ((l - l0) / (l1 - l0 || 1)) * (height - 4);
  const line = document.createElementNS(SVG_NS, "polyline");
  line.setAttribute("points", points.map(([s, l]) => `${x(s).toFixed(1)},${y(l).toFixed(1)}`).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "currentColor");
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  return svg;
}

function runsSection() {
  const runs = [...state.runs.values()].sort((a, b) => (b.created_at || b.updated_at || 0) - (a.created_at || a.updated_at || 0));
  const cards = runs.map((run) => {
    const total = run.total_steps || 0;
    const pct = total ? Math.min(100, (100 * (run.step || 0)) / total) : 0;
    const samples = (run.samples || []).slice(-4);
    return h("div", { class: "lcl-card", "data-run": run.id },
      h("div", { class: "lcl-row" },
        h("strong", null, run.lora_name || run.id),
        h("span", { class: `lcl-badge lcl-${run.state}` }, run.state)),
      h("div", { class: "lcl-meta" },
        run.dataset ? `dataset ${run.dataset} · ` : "",
        run.gpu ? `${run.gpu} · ` : "",
        `spent ${money(run.cost_usd)}`),
      total ? h("div", { class: "lcl-bar" }, h("div", { class: "lcl-fill lcl-ok", style: `width:${pct.toFixed(1)}%` })) : null,
      h("div", { class: "lcl-meta", "data-progress": run.id },
        total ? `step ${run.step ?? 0}/${total}` : "waiting for the trainer",
        typeof run.loss === "number" ? ` · loss ${run.loss.toFixed(4)}` : "",
        run.live && typeof run.eta_seconds === "number" ? ` · ETA ${duration(run.eta_seconds)}` : ""),
      (state.loss.get(run.id) || []).length >= 2 ? lossGraph(state.loss.get(run.id)) : null,
      run.error ? h("div", { class: "lcl-error" }, run.error) : null,
      attemptsBlock(run, { h, money, duration }),
      run.live && run.instance_id != null
        ? h("div", { class: "lcl-actions" },
            dangerButton(`stop-run:${run.id}`, "Stop run", "Stop? Progress since the last checkpoint is lost",
              () => lc.stopRun(run.id).then(refresh), "Run stopped; its instance is destroyed"))
        : null,
      samples.length
        ? h("div", { class: "lcl-samples" }, samples.map((file) =>
            h("a", { href: lc.sampleUrl(run.id, file), target: "_blank", rel: "noopener" },
              h("img", { src: lc.sampleUrl(run.id, file), alt: file, title: file, loading: "lazy" }))))
        : null);
  });
  return section("Runs", "runs", cards.length ? cards : h("div", { class: "lcl-empty" }, "No training runs yet."));
}

function datasetsSection() {
  const items = state.datasets.map((ds) => {
    const open = state.openDataset === ds.name;
    const images = open ? state.datasetImages.get(ds.name) : null;
    return h("div", { class: "lcl-card", "data-dataset": ds.name },
      h("div", { class: "lcl-row" },
        h("button", { class: "lcl-link", onclick: () => toggleDataset(ds.name) }, `${open ? "▾" : "▸"} ${ds.name}`),
        h("span", { class: "lcl-meta" }, `${ds.images} images · ${ds.captioned} captioned`
          + (ds.complete === false ? " · incomplete: its upload did not finish" : ""))),
      open && images ? h("div", { class: "lcl-grid" }, images.map((img) =>
        h("figure", { class: "lcl-figure" },
          h("img", { src: lc.thumbUrl(ds.name, img.file), alt: img.file, loading: "lazy" }),
          h("figcaption", { class: "lcl-caption" }, img.caption ?? "(no caption)")))) : null,
      open ? h("div", { class: "lcl-actions" },
        dangerButton(`delete-dataset:${ds.name}`, "Delete dataset", "Really delete?",
          () => lc.deleteDataset(ds.name).then(refresh), "Dataset deleted")) : null);
  });
  return section("Datasets", "datasets", items.length ? items : h("div", { class: "lcl-empty" }, "No datasets."));
}

async function toggleDataset(name) {
  if (state.openDataset === name) return state.set({ openDataset: null });
  state.set({ openDataset: name });
  try {
    state.datasetImages.set(name, await lc.datasetImages(name));
    state.changed();
  } catch (err) {
    toast("error", "LoRA Cloud", err.message);
  }
}

function lorasSection() {
  const items = state.loras.map((lora) => h("div", { class: "lcl-card", "data-lora": lora.name },
    h("div", { class: "lcl-row" },
      h("strong", null, lora.name),
      h("span", { class: "lcl-meta" }, `${(lora.size / 1e6).toFixed(1)} MB${lora.local ? " · in ComfyUI" : ""}`)),
    h("div", { class: "lcl-actions" },
      lora.local ? null : button(`download:${lora.name}`, "Download", async () => {
        await lc.downloadLora(lora.name);
        await refresh();
        try {
          await app.extensionManager.command.execute("Comfy.RefreshNodeDefinitions");
        } catch (err) {
          console.warn("LoRA Cloud: could not refresh node definitions", err);
        }
      }, `${lora.name} is in models/loras/lora_cloud`),
      dangerButton(`delete-lora:${lora.name}`, "Delete", "Really delete?",
        () => lc.deleteLora(lora.name).then(refresh), "LoRA deleted from the bucket"))));
  return section("LoRAs", "loras", items.length ? items : h("div", { class: "lcl-empty" }, "No LoRAs yet."));
}

// Bucket entries a listing skipped (a rented host can write anything there): said, never hidden.
function problemsNote() {
  const problems = state.problems || [];
  if (!problems.length) return null;
  return h("details", { class: "lcl-warning", "data-problems": problems.length },
    h("summary", null, `${problems.length} item${problems.length > 1 ? "s" : ""} in the bucket could not be read`
      + " and are not shown"),
    h("ul", null, problems.slice(0, 20).map((p) => h("li", null, `${p.entry}: ${p.message}`))));
}

function section(title, key, ...body) {
  return h("section", { class: "lcl-section", "data-section": key }, h("h3", null, title), ...body);
}

// ---- the tab ------------------------------------------------------------------------------------
const root = h("div", { class: "lcl-root" });

function draw() {
  if (!root.isConnected) return;
  const focused = document.activeElement;
  if (focused && focused.tagName === "INPUT" && root.contains(focused)) {
    // The user is typing (the budget field): repaint once they have left it, a little later,
    // so that a click on Save that took the focus lands on the button it was aimed at.
    focused.addEventListener("blur", () => setTimeout(draw, 400), { once: true });
    return;
  }
  paint();
}

function paint() {
  const scroll = root.scrollTop;
  const parts = [
    h("div", { class: "lcl-header" }, h("span", null, "LoRA Cloud"),
      h("button", { class: "lcl-btn", onclick: refresh, title: "Refresh" }, "↻")),
    state.error ? h("div", { class: "lcl-error", "data-error": "" }, state.error) : null,
    problemsNote(),
    instancesSection(), generateSection({ redraw: draw, toast }), costsSection(), runsSection(), datasetsSection(),
    lorasSection(),
  ];
  root.replaceChildren(...parts.filter(Boolean));
  root.scrollTop = scroll;
}

const STYLE = `
.lcl-root{display:flex;flex-direction:column;gap:.75rem;padding:.5rem .75rem;height:100%;overflow:auto;font-size:13px;color:var(--fg-color,#ddd)}
.lcl-header{display:flex;justify-content:space-between;align-items:center;font-weight:600;font-size:15px}
.lcl-section h3{margin:.25rem 0 .4rem;font-size:12px;text-transform:uppercase;letter-spacing:.05em;opacity:.7}
.lcl-card{border:1px solid var(--border-color,#444);border-radius:6px;padding:.45rem .55rem;margin-bottom:.4rem;background:var(--comfy-menu-bg,#222)}
.lcl-row{display:flex;justify-content:space-between;align-items:center;gap:.5rem}
.lcl-meta{opacity:.75;font-size:12px;margin-top:.15rem}
.lcl-empty{opacity:.6;font-style:italic}
.lcl-warning{color:#d29922;font-size:12px;word-break:break-word}.lcl-warning ul{margin:.2rem 0 0 1rem;padding:0}
.lcl-error{color:#ff7b72;font-size:12px;margin-top:.2rem;white-space:pre-wrap}
.lcl-actions{display:flex;gap:.35rem;align-items:center;margin-top:.35rem;flex-wrap:wrap}
.lcl-btn{background:var(--comfy-input-bg,#333);color:inherit;border:1px solid var(--border-color,#555);border-radius:4px;padding:.15rem .55rem;cursor:pointer;font-size:12px}
.lcl-btn:disabled{opacity:.5;cursor:wait}
.lcl-danger{border-color:#a33}.lcl-armed{background:#a33;color:#fff}
.lcl-link{background:none;border:none;color:inherit;cursor:pointer;padding:0;font-weight:600}
.lcl-input{width:5rem;background:var(--comfy-input-bg,#333);color:inherit;border:1px solid var(--border-color,#555);border-radius:4px;padding:.1rem .3rem}
.lcl-badge{font-size:11px;border-radius:10px;padding:0 .45rem;background:#555}
.lcl-running,.lcl-training{background:#1f6f3f}.lcl-loading,.lcl-creating,.lcl-starting,.lcl-launching,.lcl-uploading,.lcl-pending{background:#7a5b12}
.lcl-failed,.lcl-lost,.lcl-timed_out{background:#8b2323}.lcl-done{background:#1d4f91}
.lcl-bar{height:6px;border-radius:3px;background:#444;overflow:hidden;margin-top:.3rem}
.lcl-fill{height:100%}.lcl-fill.lcl-ok{background:#3fb950}.lcl-fill.lcl-warn{background:#d29922}.lcl-fill.lcl-over{background:#f85149}
.lcl-loss{width:100%;height:56px;color:#58a6ff;margin-top:.3rem;background:rgba(255,255,255,.03)}
.lcl-samples{display:flex;gap:.3rem;margin-top:.35rem}.lcl-samples img{width:56px;height:56px;object-fit:cover;border-radius:3px}
.lcl-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(72px,1fr));gap:.4rem;margin-top:.4rem}
.lcl-figure{margin:0}.lcl-figure img{width:100%;aspect-ratio:1;object-fit:cover;border-radius:3px}
.lcl-caption{font-size:11px;opacity:.8;word-break:break-word;max-height:4.2em;overflow:hidden}
.lcg-thumb{width:100%;aspect-ratio:1;object-fit:cover;border-radius:3px}
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
    document.head.append(h("style", { "data-lora-cloud": "" }, STYLE));
    state.addEventListener("change", draw);
    api.addEventListener(EVENTS.run, (event) => state.upsertRun(event.detail));
    api.addEventListener(EVENTS.instance, (event) => {
      state.set({ instances: event.detail.instances || [] });
      refreshCosts();
    });
    api.addEventListener(EVENTS.budget, onBudget);
    api.addEventListener("lora_cloud.session", (event) => onSessionEvent(event.detail));
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
