// LoRA Cloud sidebar, the LoRA card's part (a `loraCardExtras` entry of loras.js): what made the
// LoRA (from its bucket JSON), and trying it in one click. "Test" queues the basic_txt2img template
// with the LoRA and the prompt (prefilled with its trigger word) on this ComfyUI (or the remote
// session), "Compare strengths" queues lora_comparison; the card follows the prompt and shows the
// image. No side effects at import: ComfyUI imports every .js file in this folder as a module.
import { api } from "../../scripts/api.js";
import { loraCloudApi as lc, stores } from "./live.js";
import { h, toast } from "./ui.js";

const POLL_MS = 1500; // a test's prompt is followed by asking (the server pushes nothing for it)
const FINISHED = new Set(["done", "failed", "unknown"]);
const { library } = stores;
const entry = (name) => library.test(name); // {prompt, defaulted, promptId, template, state, error, images, busy}
const changed = () => library.changed();

// ---- what made it ---------------------------------------------------------------------------------
function dateOf(m) {
  if (typeof m.date === "string") return m.date.slice(0, 10);
  if (typeof m.created_at === "number") return new Date(m.created_at * 1000).toISOString().slice(0, 10);
  return null;
}

// One line of facts from the LoRA's JSON (bucket content: it only ever goes in as text).
export function loraFacts(lora) {
  const m = lora.metadata && typeof lora.metadata === "object" ? lora.metadata : {};
  const num = (v) => typeof v === "number" && isFinite(v);
  const parts = [];
  if (m.trigger) parts.push(`trigger "${String(m.trigger).slice(0, 80)}"`);
  if (m.dataset) parts.push(`dataset ${String(m.dataset).slice(0, 80)}` + (num(m.images) ? ` (${m.images} images)` : ""));
  if (num(m.steps)) parts.push(`${m.steps} steps`);
  if (num(m.rank)) parts.push(`rank ${m.rank}` + (num(m.alpha) ? `, alpha ${m.alpha}` : ""));
  if (num(m.final_loss)) parts.push(`loss ${m.final_loss.toFixed(4)}`);
  if (num(m.cost_usd)) parts.push(`$${m.cost_usd.toFixed(2)}`);
  const date = dateOf(m);
  if (date) parts.push(date);
  if (m.run_id) parts.push(`run ${String(m.run_id).slice(0, 80)}`);
  return parts.length ? h("div", { class: "lcl-meta", "data-lora-facts": lora.name }, parts.join(" · ")) : null;
}

// ---- trying it ------------------------------------------------------------------------------------
async function follow(name, promptId) {
  const t = entry(name);
  while (t.promptId === promptId) {
    try {
      const status = await lc.loraTestStatus(promptId);
      if (t.promptId !== promptId) return;
      Object.assign(t, { state: status.state, error: status.error, images: status.images || [] });
    } catch (err) {
      Object.assign(t, { state: "unknown", error: err.message });
    }
    changed();
    if (FINISHED.has(t.state)) return;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function start(name, compare) {
  const t = entry(name);
  if (t.busy || t.state === "queued" || t.state === "running") return; // one test of a LoRA at a time
  t.busy = true;
  changed();
  try {
    const queued = await lc.testLora(name, { prompt: t.prompt || undefined, compare, client_id: api.clientId || undefined });
    Object.assign(t, { promptId: queued.prompt_id, template: queued.template, state: "queued", error: null, images: [] });
    t.prompt = queued.prompt;
    follow(name, queued.prompt_id);
  } catch (err) {
    toast("error", "LoRA Cloud", err.message);
  } finally {
    t.busy = false;
    changed();
  }
}

const STATE_TEXT = { queued: "queued…", running: "rendering…", done: "done", failed: "failed", unknown: "lost" };

// The card's Test / Compare strengths controls and the result.
export function loraTestPanel(lora) {
  const t = entry(lora.name);
  const input = h("input", { type: "text", class: "lcl-input lcl-prompt", "aria-label": `Test prompt for ${lora.name}`,
                             placeholder: "a prompt with the trigger word", value: t.prompt ?? "",
                             oninput: (e) => { t.prompt = e.target.value; } });
  const running = t.busy || t.state === "queued" || t.state === "running";
  const image = t.state === "done" && t.images.length ? lc.loraTestImageUrl(t.promptId, 0) : null;
  return h("div", { class: "lcl-test", "data-lora-test": lora.name },
    input,
    h("div", { class: "lcl-actions" },
      h("button", { class: "lcl-btn", "data-action": `test:${lora.name}`, "aria-disabled": running ? "true" : null,
                    onclick: () => start(lora.name, false) }, "Test"),
      h("button", { class: "lcl-btn", "data-action": `compare:${lora.name}`, "aria-disabled": running ? "true" : null,
                    onclick: () => start(lora.name, true) }, "Compare strengths"),
      t.state ? h("span", { class: "lcl-meta", "data-test-state": lora.name },
        `${t.template === "lora_comparison" ? "comparison" : "test"} ${STATE_TEXT[t.state] || t.state}`) : null),
    t.error ? h("div", { class: "lcl-error" }, t.error) : null,
    image ? h("a", { href: image, target: "_blank", rel: "noopener" },
      h("img", { class: "lcl-test-image", src: image, alt: `${lora.name}: ${t.prompt || ""}`, "data-test-image": lora.name }))
      : null);
}

// What loras.js puts on every LoRA card: the facts, then the test controls, on their own line.
export function loraTestCard(lora) {
  return h("div", { class: "lcl-lora-extra" }, loraFacts(lora), loraTestPanel(lora));
}
