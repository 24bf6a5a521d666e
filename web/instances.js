// LoRA Cloud sidebar section "Instances": rented GPUs (stop, destroy, logs), what they cost, the
// monthly budget, and quick launch. No side effects at import.
import { stores } from "./live.js";
import { loraCloudState as state } from "./state.js";
import { BILLING } from "./stores.js";
import { act, button, dangerButton, duration, empty, h, money, section, select } from "./ui.js";

const { instances, library, notifications, runs } = stores;

function instanceCard(inst, since) {
  const running = BILLING.includes(inst.state);
  const uptime = inst.uptime_seconds + (running ? since : 0);
  const logs = instances.logs.get(inst.id);
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
        ? button(`stop:${inst.id}`, "Stop", () => instances.stop(inst.id), "Instance stopped")
        : null,
      dangerButton(`destroy:${inst.id}`, "Destroy", "Really destroy?", () => instances.destroy(inst.id), "Instance destroyed"),
      button(`logs:${inst.id}`, logs != null ? "Hide logs" : "Logs", () => instances.toggleLogs(inst.id))),
    logs != null ? h("pre", { class: "lcl-logs" }, logs) : null);
}

// Train a stored dataset on the cheapest fitting vast.ai offer (the same path as the Launch node;
// launching the same dataset and preset again re-attaches instead of renting twice).
function quickLaunch() {
  const quick = state.quick;
  // only complete datasets can be trained (the server refuses the others too)
  const trainable = library.trainable();
  if (!trainable.length) return null;
  if (!trainable.some((d) => d.name === quick.dataset)) quick.dataset = trainable[0].name;
  return h("div", { class: "lcl-quick", "data-quick-launch": "" },
    h("div", { class: "lcl-meta" }, "Quick launch"),
    h("div", { class: "lcl-actions" },
      select("Dataset to train", quick.dataset, trainable.map((d) => d.name), (v) => { quick.dataset = v; },
        { class: "lcl-input lcl-wide" }),
      select("LoRA type", quick.lora_type, ["character", "style", "concept"], (v) => { quick.lora_type = v; }),
      dangerButton("launch", "Train", "Rent a GPU?",
        () => runs.start({ dataset: quick.dataset, lora_type: quick.lora_type }).then(async (r) => {
          await instances.load();
          return r;
        }),
        (r) => (r.attached ? `Already running: ${r.run_id}`
          : `Run ${r.run_id} on ${r.gpu}` + (r.expected_usd != null ? ` (about ${money(r.expected_usd)})` : "")))));
}

function costsBlock() {
  const c = instances.costs;
  if (!c) return section("Costs", "costs", empty("…"));
  const cap = c.budgets.max_month_usd;
  const fraction = Math.min(1, c.month_fraction ?? 0);
  const level = (c.month_fraction ?? 0) >= 1 ? "over" : (c.month_fraction ?? 0) >= 0.8 ? "warn" : "ok";
  const input = h("input", { type: "number", min: "0", step: "1", value: cap, class: "lcl-input",
                             "aria-label": "Monthly budget in dollars", "data-key": "budget-input" });
  return section("Costs", "costs",
    h("div", { class: "lcl-row" }, h("span", null, "Today"), h("strong", { "data-cost": "today" }, money(c.today_usd))),
    h("div", { class: "lcl-row" }, h("span", null, "This month"),
      h("strong", { "data-cost": "month" }, `${money(c.month_usd)} of ${money(cap)}`)),
    h("div", { class: "lcl-bar", title: `${Math.round(fraction * 100)}% of the monthly budget` },
      h("div", { class: `lcl-fill lcl-${level}`, style: `width:${(fraction * 100).toFixed(1)}%` })),
    // a bill above what an instance's $/hr allows is counted at that most (service/money/costs.py:cap_charges)
    (c.suspect_charges || []).map((s) => h("div", { class: "lcl-warning", "data-cost": "suspect" },
      `Suspect bill: instance ${s.instance_id} billed ${money(s.billed_usd)}, counted ${money(s.counted_usd)} `
      + `(the most ${money(s.dph)}/hr allows); check it on vast.ai`)),
    h("div", { class: "lcl-meta" },
      `Caps: ${money(c.budgets.max_dph)}/hr per GPU · ${money(c.budgets.max_run_usd)} per run · `
      + `${c.budgets.max_run_hours}h per run`),
    h("div", { class: "lcl-actions" }, "Monthly budget $", input,
      button("budget", "Save", (e) => {
        // the field on the page (the one the user typed in), not the one this paint built
        const value = Number(e.currentTarget.parentElement.querySelector('[data-key="budget-input"]').value);
        if (!isFinite(value) || value < 0) throw new Error("the budget must be a number ≥ 0");
        return instances.setBudget({ max_month_usd: value });
      }, "Budget saved")));
}

// Notifications (service/notify/): which channels are on, a test; the webhook's URL is never shown.
function notifyBlock() {
  const n = notifications.settings;
  if (!n) return section("Notifications", "notify", empty("…"));
  const toggle = (key, label, on, disabled, hint) => h("label", { class: "lcl-meta lcl-toggle", title: hint || "" },
    h("input", { type: "checkbox", checked: on, disabled, "data-notify": key, "aria-label": label,
                 onchange: (e) => {
                   const box = e.target;
                   act(`notify:${key}`, () => notifications.set({ [key]: box.checked }).catch((err) => {
                     box.checked = !box.checked; // not changed on the server: the box says so again
                     throw err;
                   }));
                 } }),
    ` ${label}`, hint ? h("span", { class: "lcl-hint" }, ` (${hint})`) : null);
  return section("Notifications", "notify",
    h("div", { class: "lcl-actions" },
      toggle("notify_toast", "toast in ComfyUI", n.toast),
      toggle("notify_desktop", "desktop", n.desktop, false, n.desktop_here ? "" : "no desktop on this machine"),
      toggle("notify_webhook", "webhook", n.webhook && n.webhook_configured, !n.webhook_configured,
        n.webhook_configured ? (n.webhook_signed ? "signed" : "unsigned: set webhook_secret")
          : "lora-cloud config set webhook_url")),
    h("div", { class: "lcl-actions" },
      n.webhook_configured ? select("Webhook format", n.webhook_format, [["json", "JSON"], ["slack", "Slack"], ["discord", "Discord"]],
        (v) => act("notify:format", () => notifications.set({ webhook_format: v }))) : null,
      button("notify-test", "Send a test", () => notifications.test(), "Test notification sent"),
      button("notify-reload", "↻", () => notifications.load(), null, { title: "Reload the delivery list" })),
    (n.recent || []).length ? h("ul", { class: "lcl-recent", "data-notify-recent": "" }, n.recent.slice(0, 5).map((d) =>
      h("li", null, `${d.channel}: ${d.key} · ${d.state}${d.detail ? ` (${d.detail})` : ""}`))) : null);
}

function render() {
  const since = (Date.now() - instances.at) / 1000;
  const cards = instances.instances.map((inst) => instanceCard(inst, since));
  return [
    section("Instances", "instances",
      cards.length ? cards : empty("No rented GPUs. Nothing is billing."), quickLaunch()),
    costsBlock(),
    notifyBlock(),
  ];
}

// The at-a-glance figure on the section's tab: how many GPUs bill now.
function badge() {
  const n = instances.billing().length;
  return n ? String(n) : null;
}

export const instancesSection = { id: "instances", title: "Instances", render, badge,
  stores: ["instances", "library", "notifications"],
  load: () => notifications.load() };
