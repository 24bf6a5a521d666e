// LoRA Cloud sidebar section "Training": a config editor with the three presets and a live
// estimate, the queue and history of runs (filters by state and dataset), each run's live view
// (step, loss graph rebuilt from its events after a reload, samples, stop), and the comparison
// of runs in the large view (loss overlaid, samples side by side, config differences).
// No side effects at import.
import { loraCloudApi as lc, stores } from "./live.js";
import { attemptsBlock } from "./attempts.js";
import { openDialog } from "./dialog.js";
import { sampleKey } from "./format.js";
import { loraCloudState as state } from "./state.js";
import { FAILED } from "./stores.js";
import { act, button, dangerButton, duration, empty, h, lineChart, money, section, select, toast, when } from "./ui.js";

const { instances, library, runs } = stores;

function compareBox(run) {
  return h("input", { type: "checkbox", class: "lcl-compare", "data-compare": run.id, checked: state.compare.has(run.id),
                      "aria-label": `Compare ${run.lora_name || run.id}`, title: "compare",
                      onclick: (e) => e.stopPropagation(),
                      onchange: (e) => {
                        if (e.target.checked) state.compare.add(run.id);
                        else state.compare.delete(run.id);
                        state.changed();
                      } });
}

export function runCard(run) {
  const total = run.total_steps || 0;
  const pct = total ? Math.min(100, (100 * (run.step || 0)) / total) : 0;
  const samples = (run.samples || []).slice(-4);
  const loss = runs.loss.get(run.id) || [];
  return h("div", { class: "lcl-card", "data-run": run.id },
    h("div", { class: "lcl-row" },
      h("span", null, compareBox(run), " ", h("strong", null, run.lora_name || run.id)),
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
    loss.length >= 2 ? lineChart([{ points: loss, name: run.id }]) : null,
    run.error ? h("div", { class: "lcl-error" }, run.error) : null,
    attemptsBlock(run, { h, money, duration }), // the instances a preempted run ran on
    run.live && run.instance_id != null
      ? h("div", { class: "lcl-actions" },
          dangerButton(`stop-run:${run.id}`, "Stop run", "Stop? Progress since the last checkpoint is lost",
            () => runs.stop(run.id).then(() => instances.load()), "Run stopped; its instance is destroyed"))
      : null,
    samples.length
      ? h("div", { class: "lcl-samples" }, samples.map((file) =>
          h("a", { href: lc.sampleUrl(run.id, file), target: "_blank", rel: "noopener" },
            h("img", { src: lc.sampleUrl(run.id, file), alt: file, title: file, loading: "lazy" }))))
      : null,
    !run.live && state.openRun === run.id
      ? h("button", { class: "lcl-link lcl-meta", "data-action": `close-run:${run.id}`,
                      onclick: () => closeRun(run.id) }, "▴ less") : null);
}

// A past run opens as its full card, by click or by Enter / Space on its row; focus follows it.
function openRun(id) {
  state.set({ openRun: id });
  act(`load-run:${id}`, () => runs.open(id));
  queueMicrotask(() => document.querySelector(`[data-run="${CSS.escape(id)}"] [data-action="close-run:${CSS.escape(id)}"]`)?.focus());
}

function closeRun(id) {
  state.set({ openRun: null });
  queueMicrotask(() => document.querySelector(`[data-action="open-run:${CSS.escape(id)}"]`)?.focus());
}

// The row opens its run on a click anywhere; for the keyboard the run's name is a button.
function runRow(run) {
  return h("div", { class: "lcl-run-row", "data-run-row": run.id,
                    onclick: (e) => { if (e.target.tagName !== "INPUT" && e.target.tagName !== "BUTTON") openRun(run.id); } },
    h("div", { class: "lcl-row lcl-nowrap" },
      h("span", { class: "lcl-row-name" }, compareBox(run), " ",
        h("button", { class: "lcl-run-open", "data-action": `open-run:${run.id}`, "aria-expanded": "false",
                      onclick: () => openRun(run.id) }, run.lora_name || run.id)),
      h("span", { class: `lcl-badge lcl-${run.state}` }, run.state)),
    h("div", { class: "lcl-meta" }, [run.dataset, when(run.created_at || run.updated_at), money(run.cost_usd)]
      .filter(Boolean).join(" · ")));
}

// ---- the config editor --------------------------------------------------------------------------
const FIELDS = [
  ["rank", "Rank", "1"], ["learning_rate", "Learning rate", "any"], ["steps", "Steps", "1"], ["resolution", "Resolution", "64"],
];

function cfg() {
  if (!state.config) {
    state.config = { form: { dataset: "", lora_type: "character", rank: "", learning_rate: "", steps: "", resolution: "",
                             trigger: "", gpu: "" },
                     result: null, presets: null, seq: 0, loading: false };
  }
  return state.config;
}

function requestBody() {
  const f = cfg().form;
  const config = {};
  for (const [key] of FIELDS) if (f[key] !== "" && f[key] != null) config[key] = Number(f[key]);
  const body = { lora_type: f.lora_type, config };
  if (f.dataset) body.dataset = f.dataset;
  if (f.trigger) body.trigger = f.trigger;
  if (f.gpu) body.gpu = f.gpu;
  return body;
}

let checkTimer = null;
function scheduleCheck() {
  clearTimeout(checkTimer);
  checkTimer = setTimeout(checkConfig, 250);
}

export async function checkConfig() {
  const c = cfg();
  const mine = ++c.seq;
  try {
    const result = await lc.checkConfig(requestBody());
    if (mine !== c.seq) return; // a newer edit is on its way
    c.result = result;
  } catch (err) {
    if (mine !== c.seq) return;
    c.result = { ok: false, errors: [{ field: "", message: err.message }] };
  }
  state.changed(); // patched in place: the field being typed in keeps its value, caret and focus
}

// The presets, once, when the section is shown (never from a paint).
async function loadPresets() {
  const c = cfg();
  if (c.presets || c.loading) return;
  c.loading = true;
  try {
    c.presets = await lc.presets();
    c.form.gpu = c.form.gpu || c.presets.default_gpu;
    checkConfig();
  } catch (err) {
    toast("error", "LoRA Cloud", err.message);
  } finally {
    c.loading = false;
    state.changed();
  }
}

// The estimate (or the errors) and the Train button: replaced in place after each check, so they
// follow the values while the user is still typing in a field.
function configStatus() {
  const c = cfg();
  const r = c.result;
  let status;
  if (!r) status = h("div", { class: "lcl-meta" }, "…");
  else if (!r.ok) {
    status = h("div", { class: "lcl-error" },
      r.errors.map((e) => h("div", { "data-field-error": e.field || "" }, e.field ? `${e.field}: ${e.message}` : e.message)));
  } else {
    const e = r.estimate;
    status = h("div", { class: "lcl-estimate" },
      h("strong", { "data-estimate": "" }, `≈ ${duration(e.hours * 3600)} · ${money(e.usd)}`),
      h("span", { class: "lcl-meta" }, ` on ${e.gpu} at ${money(e.dph)}/hr · ${r.plan.total_steps} steps in ${r.plan.epochs}`
        + ` epochs · ${r.images} images` + (r.trigger ? ` · trigger ${r.trigger}` : "")));
  }
  const ok = r?.ok && c.form.dataset;
  return h("div", { "data-config-status": !r ? "" : r.ok ? "ok" : "errors" }, status,
    h("div", { class: "lcl-actions" },
      ok ? dangerButton("train-config", "Train", "Rent a GPU?", async () => {
        const body = requestBody();
        const started = await runs.start({ dataset: body.dataset, lora_type: body.lora_type, trigger: body.trigger,
                                           config: body.config });
        await instances.load();
        return started;
      }, (s) => (s.attached ? `Already running: ${s.run_id}`
        : `Run ${s.run_id} on ${s.gpu}` + (s.expected_usd != null ? ` (about ${money(s.expected_usd)})` : "")))
        : h("span", { class: "lcl-meta" }, "Pick a complete dataset and valid values to train"),
      h("span", { class: "lcl-meta" }, "the launch rents the cheapest fitting offer")));
}

function configEditor() {
  const c = cfg();
  const f = c.form;
  const defaults = c.result?.defaults || {};
  const datasets = library.trainable().map((d) => d.name);
  const presetButtons = (c.presets?.presets || []).map((p) => h("button", {
    class: `lcl-btn${f.lora_type === p.name ? " lcl-btn-on" : ""}`, "data-preset": p.name, title: p.description,
    onclick: () => {
      Object.assign(f, { lora_type: p.name, rank: "", learning_rate: "", steps: "", resolution: "" });
      state.changed();
      checkConfig();
    },
  }, p.name));
  const input = (key, label, step) => h("label", { class: "lcl-field" }, h("span", null, label),
    h("input", { type: "number", class: "lcl-input", step, min: "0", value: f[key] ?? "", "aria-label": label,
                 placeholder: defaults[key] != null ? String(defaults[key]) : "",
                 oninput: (e) => { f[key] = e.target.value; scheduleCheck(); } }));
  return h("div", { class: "lcl-card", "data-config-editor": "" },
    h("div", { class: "lcl-actions" }, "Preset ", presetButtons),
    h("div", { class: "lcl-fields" },
      h("label", { class: "lcl-field" }, h("span", null, "Dataset"),
        select("Dataset for the run", f.dataset, datasets.length ? datasets : [["", "(no complete dataset)"]],
          (v) => { f.dataset = v; checkConfig(); })),
      FIELDS.map(([key, label, step]) => input(key, label, step)),
      h("label", { class: "lcl-field" }, h("span", null, "Trigger word"),
        h("input", { class: "lcl-input", value: f.trigger, placeholder: c.result?.trigger || "", "aria-label": "Trigger word",
                     oninput: (e) => { f.trigger = e.target.value; scheduleCheck(); } })),
      h("label", { class: "lcl-field" }, h("span", null, "Estimate on"),
        select("GPU for the estimate", f.gpu, c.presets?.gpus || [f.gpu || "RTX 4090"],
          (v) => { f.gpu = v; checkConfig(); }))),
    configStatus());
}

// ---- queue and history ----------------------------------------------------------------------------
function matches(run) {
  const { state: s, dataset } = state.trainFilter;
  if (dataset !== "all" && run.dataset !== dataset) return false;
  if (s === "all") return true;
  if (s === "live") return run.live;
  if (s === "failed") return FAILED.includes(run.state);
  return run.state === s;
}

function runsList() {
  const all = runs.sorted();
  const shown = all.filter(matches);
  const datasets = [...new Set(all.map((r) => r.dataset).filter(Boolean))].sort();
  const f = state.trainFilter;
  const picked = [...state.compare].filter((id) => runs.runs.has(id));
  // a run watched live here keeps its card when it ends (it says done, failed...)
  const live = shown.filter((r) => r.live || runs.watched.has(r.id));
  const past = shown.filter((r) => !(r.live || runs.watched.has(r.id)));
  return [
    h("div", { class: "lcl-actions", "data-run-filters": "" },
      select("Filter runs by state", f.state, [["all", "all states"], ["live", "live"], ["preempted", "preempted"],
        ["done", "done"], ["failed", "failed"], ["stopped", "stopped"]], (v) => { f.state = v; state.changed(); }),
      select("Filter runs by dataset", f.dataset, [["all", "all datasets"], ...datasets.map((d) => [d, d])],
        (v) => { f.dataset = v; state.changed(); }, { class: "lcl-input lcl-wide" }),
      picked.length >= 2
        ? button("compare", `Compare (${picked.length})`, () => openCompare(picked.slice(0, 4)))
        : h("span", { class: "lcl-meta" }, "tick two runs to compare")),
    live.length ? live.map(runCard) : null,
    past.length ? h("div", { class: "lcl-history" },
      past.map((run) => (state.openRun === run.id ? runCard(run) : runRow(run)))) : null,
    !shown.length ? empty(all.length ? "No run matches the filters." : "No training runs yet.") : null,
  ];
}

// ---- comparison (large view) ------------------------------------------------------------------------
async function openCompare(ids) {
  state.comparison = { ids, configs: {}, samples: {}, loading: true };
  openDialog("compare", "Compare runs", compareView);
  const { configs, samples } = await runs.comparison(ids);
  state.set({ comparison: { ids, configs, samples, loading: false } });
}

function show(value) {
  if (value === undefined) return "–";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function compareView() {
  const cmp = state.comparison;
  if (!cmp) return [empty("Nothing to compare.")];
  const shown = cmp.ids.map((id) => runs.runs.get(id) || { id });
  const name = (r) => r.lora_name || r.id;
  const series = shown.map((r) => ({ name: r.id, points: runs.loss.get(r.id) || [] }));
  const legend = h("div", { class: "lcl-legend" }, shown.map((r, i) => h("span", { class: `lcl-series-${i}` },
    `▬ ${name(r)} (${r.state || "?"}${typeof r.loss === "number" ? `, loss ${r.loss.toFixed(4)}` : ""})`)));
  // samples at the same step, side by side
  const keys = new Map();
  for (const r of shown) {
    for (const file of cmp.samples[r.id] || []) {
      const k = sampleKey(file);
      if (!keys.has(k.key)) keys.set(k.key, { order: k.order, files: {} });
      keys.get(k.key).files[r.id] = file;
    }
  }
  const rows = [...keys.entries()].sort((a, b) => a[1].order - b[1].order).slice(-12);
  const samples = rows.length ? h("table", { class: "lcl-table", "data-compare-samples": "" },
    h("tr", null, h("th", null, "sample"), shown.map((r) => h("th", null, name(r)))),
    rows.map(([key, row]) => h("tr", { "data-sample-key": key }, h("td", null, key),
      shown.map((r) => h("td", null, row.files[r.id]
        ? h("a", { href: lc.sampleUrl(r.id, row.files[r.id]), target: "_blank", rel: "noopener" },
            h("img", { src: lc.sampleUrl(r.id, row.files[r.id]), alt: row.files[r.id], loading: "lazy" }))
        : "–"))))) : empty(cmp.loading ? "…" : "No samples yet.");
  // the configs, differences first
  const allKeys = [...new Set(shown.flatMap((r) => Object.keys(cmp.configs[r.id] || {})))].sort();
  const differs = (k) => new Set(shown.map((r) => show((cmp.configs[r.id] || {})[k]))).size > 1;
  const configRow = (k) => h("tr", { class: differs(k) ? "lcl-diff" : "", "data-config-key": k }, h("td", null, k),
    shown.map((r) => h("td", null, show((cmp.configs[r.id] || {})[k]))));
  const header = h("tr", null, h("th", null, "setting"), shown.map((r) => h("th", null, name(r))));
  const diffKeys = allKeys.filter(differs);
  const sameKeys = allKeys.filter((k) => !differs(k));
  return [
    legend,
    lineChart(series, { width: 700, height: 180, label: "loss by step, runs overlaid", cls: "lcl-loss lcl-loss-big" }),
    h("h4", null, "Samples at the same step"), samples,
    h("h4", null, `Config: ${diffKeys.length} difference${diffKeys.length === 1 ? "" : "s"}`),
    h("table", { class: "lcl-table", "data-compare-config": "" }, header, diffKeys.map(configRow)),
    sameKeys.length ? h("details", null, h("summary", null, `${sameKeys.length} settings the same`),
      h("table", { class: "lcl-table" }, sameKeys.map(configRow))) : null,
  ];
}

// ---- the section --------------------------------------------------------------------------------
function render() {
  return [section("New run", "config", configEditor()), section("Runs", "runs", runsList())];
}

function badge() {
  const live = runs.live().length;
  return live ? String(live) : null;
}

// A complete dataset is picked for the editor once the library has one (a store's news, not a paint).
function pickDataset() {
  const f = cfg().form;
  const first = library.trainable()[0];
  if (!f.dataset && first) {
    f.dataset = first.name;
    scheduleCheck();
  }
}

export const trainingSection = { id: "training", title: "Training", render, badge,
  stores: ["runs", "library"], load: loadPresets, setup: () => library.subscribe(pickDataset) };
