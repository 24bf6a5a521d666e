// LoRA Cloud sidebar section "Training": the runs with live step, loss, ETA and samples; stop.
// No side effects at import.
import { loraCloudApi as lc } from "./api.js";
import { refresh } from "./data.js";
import { loraCloudState as state } from "./state.js";
import { dangerButton, duration, empty, h, lineChart, money, section } from "./ui.js";

export function runCard(run) {
  const total = run.total_steps || 0;
  const pct = total ? Math.min(100, (100 * (run.step || 0)) / total) : 0;
  const samples = (run.samples || []).slice(-4);
  const loss = state.loss.get(run.id) || [];
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
    loss.length >= 2 ? lineChart([{ points: loss }]) : null,
    run.error ? h("div", { class: "lcl-error" }, run.error) : null,
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
}

function render() {
  const runs = [...state.runs.values()].sort(
    (a, b) => (b.created_at || b.updated_at || 0) - (a.created_at || a.updated_at || 0));
  return [section("Runs", "runs", runs.length ? runs.map(runCard) : empty("No training runs yet."))];
}

function badge() {
  const live = state.liveRuns().length;
  return live ? String(live) : null;
}

export const trainingSection = { id: "training", title: "Training", render, badge };
