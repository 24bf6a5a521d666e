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
    this.tab = "instances"; // the section shown: instances, datasets, training, loras, generate
    this.history = new Map(); // run id -> next events index already merged into `loss` (after a reload)
    this.editor = new Map(); // dataset name -> {images: [{file, caption, generation}], undo: [...]}
    this.upload = null; // the upload being staged: {name, files: Map(file -> {size, state, reason}), ...}
    this.review = null; // the preparation review: {name, items, decisions, report, ...}
    this.trainFilter = { state: "all", dataset: "all" };
    this.compare = new Set(); // run ids ticked for comparison
    this.config = null; // the config editor: {form, result, presets}
    this.dialog = null; // the large view: {title, render} or null
    this.openRun = null; // a past run shown as a full card
    this.comparison = null; // the runs being compared: {ids, configs, samples}
    this.notify = null; // notification channels as set (service/notify.py), and the latest deliveries
  }

  // Loss points from a run's events (a reload) merged into its series, kept sorted by step.
  mergeLoss(id, points) {
    const byStep = new Map((this.loss.get(id) || []).map((p) => [p[0], p[1]]));
    for (const [step, loss] of points) {
      if (typeof step === "number" && typeof loss === "number" && isFinite(loss)) byStep.set(step, loss);
    }
    let series = [...byStep.entries()].sort((a, b) => a[0] - b[0]);
    if (series.length > MAX_LOSS_POINTS) series = series.slice(series.length - MAX_LOSS_POINTS);
    this.loss.set(id, series);
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
