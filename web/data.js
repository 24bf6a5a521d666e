// LoRA Cloud: loading what the sections show into the state singleton. No side effects at import.
import { loraCloudApi as lc } from "./api.js";
import { loraCloudState as state } from "./state.js";
import { button } from "./ui.js";

// Everything at a glance: instances, costs, runs (live ones in detail), datasets, LoRAs.
export async function refresh() {
  try {
    const [instances, costs, runList] = await Promise.all([lc.instances(), lc.costs(), lc.runListing()]);
    state.set({ instances, costs, error: null });
    state.setRuns(runList.runs);
    for (const run of runList.runs.filter((r) => r.live)) state.upsertRun(await lc.run(run.id));
    // long listings come a page at a time: the server reads details only for what is shown
    const [datasetList, loraList] = await Promise.all([
      lc.datasetListing(state.shown.datasets), lc.loraListing(state.shown.loras)]);
    const problems = [runList, datasetList, loraList].flatMap((l) => l.problems || []);
    const totals = { datasets: datasetList.total ?? datasetList.datasets.length,
                     loras: loraList.total ?? loraList.loras.length };
    state.set({ datasets: datasetList.datasets, loras: loraList.loras, problems, totals });
  } catch (err) {
    state.set({ error: err.message });
  }
}

export async function refreshCosts() {
  try {
    state.set({ costs: await lc.costs() });
  } catch (err) {
    state.set({ error: err.message });
  }
}

// "Show more" under a long listing (datasets, loras): asks for the next page with the others.
export function moreButton(key, shown) {
  const total = state.totals[key] || 0;
  if (shown >= total) return null;
  return button(`more:${key}`, `Show more (${shown} of ${total})`, async () => {
    state.shown[key] += 100;
    await refresh();
  });
}
