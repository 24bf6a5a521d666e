// LoRA Cloud: the runs store: the queue and history, each run's loss series, live from the run
// events.
// No side effects at import: ComfyUI imports every .js file in this folder as a module.
import { EVENTS } from "./events.js";
import { Store } from "./store.js";

const MAX_LOSS_POINTS = 500;
const LIVE_HISTORY_EVERY_MS = 30_000; // a live run's events are read again at most this often
export const FAILED = ["failed", "timed_out", "lost"];

export class RunsStore extends Store {
  constructor(api, { now = () => Date.now() } = {}) {
    super();
    this.api = api;
    this.now = now;
    this.runs = new Map(); // id -> run view
    this.loss = new Map(); // id -> [[step, loss], ...]
    this.history = new Map(); // id -> next events index already merged into `loss`
    this.historyAt = new Map(); // id -> when its events were last read
    this.historyPending = new Set();
    this.watched = new Set(); // runs seen live in this page: their card stays when they end
    this.problems = [];
  }

  listen(source) {
    this.on(source, EVENTS.run, (run) => {
      if (run.id != null) this.upsert(run);
    });
  }

  load() {
    return this.guarded(async () => {
      const listing = await this.api.runListing();
      this.problems = listing.problems || [];
      this.runs = new Map();
      for (const run of listing.runs) this.upsert(run, false);
      const live = listing.runs.filter((r) => r.live);
      for (const run of await Promise.all(live.map((r) => this.api.run(r.id)))) this.upsert(run, false);
      await Promise.all(live.map((r) => this.loadHistory(r.id)));
    });
  }

  // One run's view from a fetch or an event; the loss series grows by step.
  upsert(run, notify = true) {
    const old = this.runs.get(run.id) || {};
    const merged = { ...old, ...run };
    if (!run.samples && old.samples) merged.samples = old.samples;
    this.runs.set(run.id, merged);
    if (merged.live) this.watched.add(run.id);
    if (typeof run.loss === "number" && typeof run.step === "number") {
      const series = this.loss.get(run.id) || [];
      const last = series[series.length - 1];
      if (!last || run.step > last[0]) series.push([run.step, run.loss]);
      else if (run.step === last[0]) last[1] = run.loss;
      if (series.length > MAX_LOSS_POINTS) series.splice(0, series.length - MAX_LOSS_POINTS);
      this.loss.set(run.id, series);
    }
    if (notify) {
      this.changed();
      // a live run's points missed while this page was away come from its events, now and then
      const at = this.historyAt.get(run.id);
      if (merged.live && (!at || this.now() - at >= LIVE_HISTORY_EVERY_MS)) this.loadHistory(run.id);
    }
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

  async loadHistory(id) {
    if (this.historyPending.has(id)) return;
    this.historyPending.add(id);
    this.historyAt.set(id, this.now());
    try {
      const answer = await this.api.runEvents(id, this.history.get(id) || 0);
      const points = answer.events.filter((e) => e.kind === "progress").map((e) => [e.step, e.loss]);
      this.history.set(id, answer.next);
      if (points.length) this.mergeLoss(id, points);
      this.changed();
    } catch (err) {
      console.warn("LoRA Cloud: no events for", id, err);
    } finally {
      this.historyPending.delete(id);
    }
  }

  // A past run opened as a full card: its whole view and its loss series.
  async open(id) {
    this.upsert(await this.api.run(id));
    if (!this.history.has(id)) await this.loadHistory(id);
  }

  async stop(id) {
    const answer = await this.api.stopRun(id);
    await this.load();
    return answer;
  }

  async start(body) {
    const started = await this.api.startRun(body);
    await this.load();
    return started;
  }

  // What the comparison needs of each run: its series, its config, its samples.
  async comparison(ids) {
    const configs = {};
    const samples = {};
    await Promise.all(ids.map(async (id) => {
      if (!this.history.has(id)) await this.loadHistory(id);
      try {
        configs[id] = (await this.api.runConfig(id)).config;
      } catch (err) {
        configs[id] = { problem: err.message };
      }
      try {
        samples[id] = (await this.api.run(id)).samples || [];
      } catch {
        samples[id] = [];
      }
    }));
    return { configs, samples };
  }

  live() {
    return [...this.runs.values()].filter((r) => r.live);
  }

  // newest first
  sorted() {
    return [...this.runs.values()].sort(
      (a, b) => (b.created_at || b.updated_at || 0) - (a.created_at || a.updated_at || 0));
  }
}
