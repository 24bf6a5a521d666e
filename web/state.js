// LoRA Cloud: the sidebar's state, one singleton that outlives the tab.
// ComfyUI calls the tab's render() with a fresh element every time it is shown, and destroy()
// is not reliable, so everything worth keeping lives here and views are rebuilt from it.
// No side effects beyond building the singleton (ComfyUI imports every .js file here).

const MAX_LOSS_POINTS = 500;

class LoraCloudState extends EventTarget {
  constructor() {
    super();
    this.instances = [];
    this.instancesAt = 0; // Date.now() when instances arrived, so uptime can tick locally
    this.costs = null;
    this.runs = new Map(); // id -> run view
    this.loss = new Map(); // id -> [[step, loss], ...]
    this.datasets = [];
    this.datasetImages = new Map(); // dataset name -> [{file, caption, size}]
    this.openDataset = null;
    this.loras = [];
    this.shown = { datasets: 100, loras: 100 }; // how many of each listing to ask for
    this.totals = { datasets: 0, loras: 0 }; // how many there are in the bucket
    this.logs = new Map(); // instance id -> text
    this.busy = new Set(); // action keys in flight, e.g. "stop:77"
    this.error = null;
    this.problems = []; // [{entry, message}]: bucket entries the listings skipped
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }

  set(fields) {
    Object.assign(this, fields);
    if ("instances" in fields) this.instancesAt = Date.now();
    this.changed();
  }

  setRuns(runs) {
    this.runs = new Map();
    for (const run of runs) this.upsertRun(run, false);
    this.changed();
  }

  // One run's view from a fetch or a "lora_cloud.run" event; the loss series grows by step.
  upsertRun(run, notify = true) {
    const old = this.runs.get(run.id) || {};
    const merged = { ...old, ...run };
    if (!run.samples && old.samples) merged.samples = old.samples;
    this.runs.set(run.id, merged);
    if (typeof run.loss === "number" && typeof run.step === "number") {
      const series = this.loss.get(run.id) || [];
      const last = series[series.length - 1];
      if (!last || run.step > last[0]) series.push([run.step, run.loss]);
      else if (run.step === last[0]) last[1] = run.loss;
      if (series.length > MAX_LOSS_POINTS) series.splice(0, series.length - MAX_LOSS_POINTS);
      this.loss.set(run.id, series);
    }
    if (notify) this.changed();
  }

  liveRuns() {
    return [...this.runs.values()].filter((r) => r.live);
  }
}

export const loraCloudState = new LoraCloudState();
