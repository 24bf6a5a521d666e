// The attempts of a run that was preempted, for its card in the Runs section: one line per
// instance it ran on (GPU, $/hr, interruptible or not, steps, cost, how it ended), then the
// preemptions, the time they cost and the total. Nothing for a run that ran once, undisturbed.
// The data is the run view's "attempts" (service/runs/recovery.py:history); every text from the bucket
// goes in as a text node (the helpers are the sidebar's own, passed in).

function attemptLine(a, money) {
  const kind = a.interruptible === true ? " interruptible" : a.interruptible === false ? " on-demand" : "";
  const price = typeof a.dph === "number" ? ` $${a.dph.toFixed(3)}/hr` : "";
  const end = typeof a.step_end === "number" ? a.step_end : "?";
  const cost = typeof a.cost_usd === "number" ? ` · ${money(a.cost_usd)}` : "";
  return `${a.gpu || "GPU ?"}${price}${kind} · instance ${a.instance_id || "?"} · steps ${a.step_start || 0}–${end}`
    + `${cost} · ${a.end || "?"}`;
}

export function attemptsBlock(run, { h, money, duration }) {
  const history = run && run.attempts;
  if (!history || !Array.isArray(history.attempts)) return null;
  if (history.attempts.length < 2 && !history.preemptions) return null;
  const total = typeof history.total_usd === "number" ? ` · total ${money(history.total_usd)}` : "";
  return h("div", { class: "lcl-attempts", "data-attempts": run.id },
    h("ol", null, history.attempts.map((a) => h("li", { "data-attempt": a.n }, attemptLine(a, money)))),
    h("div", null, `${history.preemptions || 0} preemption(s) · ${duration(history.lost_s || 0)} lost`
      + ` (${history.lost_steps || 0} steps again)${total}`));
}
