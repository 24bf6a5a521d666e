// LoRA Cloud: loading what the sections show into the state singleton. No side effects at import.
import { loraCloudApi as lc } from "./api.js";
import { loraCloudState as state } from "./state.js";

// Everything at a glance: instances, costs, runs (live ones in detail), datasets, LoRAs.
export async function refresh() {
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

export async function refreshCosts() {
  try {
    state.set({ costs: await lc.costs() });
  } catch (err) {
    state.set({ error: err.message });
  }
}
