// LoRA Cloud: one store per noun the sidebar shows (runs, instances, library, sessions,
// notifications). Each owns its data, fetches it through the api object it is given (api.js) and
// follows the server events it listens to; sections subscribe and paint, and never fetch.
// No DOM, no ComfyUI: tests/js runs them under Node with a fake api and event source.
// No side effects at import: ComfyUI imports every .js file in this folder as a module.
import { EVENTS } from "./events.js";

const MAX_LOSS_POINTS = 500;
const LIVE_HISTORY_EVERY_MS = 30_000; // a live run's events are read again at most this often
export const BILLING = ["running", "loading", "creating"];
export const FAILED = ["failed", "timed_out", "lost"];

export class Store {
  constructor() {
    this.listeners = new Set();
    this.error = null; // the last load's failure, in words, or null
  }

  // fn(store) after every change; returns the unsubscribe function
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  changed() {
    for (const fn of [...this.listeners]) fn(this);
  }

  // `source` is an EventTarget whose events carry the server's data in `detail` (ComfyUI's api)
  on(source, name, handler) {
    source.addEventListener(name, (event) => handler(event.detail || {}));
  }

  async guarded(fn) {
    try {
      const result = await fn();
      this.error = null;
      return result;
    } catch (err) {
      this.error = err.message;
      return null;
    } finally {
      this.changed();
    }
  }
}

// ---- runs: the queue and history, each run's loss series, live from EVENTS.run -----------------
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

// ---- instances: rented GPUs, their logs, costs and budgets ----------------------------------------
export class InstancesStore extends Store {
  constructor(api, { now = () => Date.now() } = {}) {
    super();
    this.api = api;
    this.now = now;
    this.instances = [];
    this.at = 0; // when instances arrived, so uptime can tick locally
    this.costs = null;
    this.logs = new Map(); // instance id -> text
  }

  listen(source) {
    this.on(source, EVENTS.instance, (data) => {
      this.setInstances(data.instances || []);
      this.loadCosts();
    });
    this.on(source, EVENTS.budget, (data) => {
      this.loadCosts();
      if (data.kind === "enforced") this.load(); // an instance was destroyed
    });
    // a run that ended took its instance with it: show that now, not a guard round later
    this.on(source, EVENTS.run, (run) => {
      if (run.live === false && this.instances.some((i) => i.run_id === run.id)) this.load();
    });
  }

  setInstances(instances) {
    this.instances = instances;
    this.at = this.now();
    this.changed();
  }

  load() {
    return this.guarded(async () => {
      const [instances, costs] = await Promise.all([this.api.instances(), this.api.costs()]);
      this.instances = instances;
      this.at = this.now();
      this.costs = costs;
    });
  }

  loadCosts() {
    return this.guarded(async () => { this.costs = await this.api.costs(); });
  }

  billing() {
    return this.instances.filter((i) => BILLING.includes(i.state));
  }

  async stop(id) {
    await this.api.stopInstance(id);
    await this.load();
  }

  async destroy(id) {
    await this.api.destroyInstance(id);
    await this.load();
  }

  async toggleLogs(id) {
    if (this.logs.has(id)) this.logs.delete(id);
    else this.logs.set(id, await this.api.instanceLogs(id));
    this.changed();
  }

  async setBudget(changes) {
    await this.api.setBudgets(changes);
    await this.loadCosts();
  }
}

// ---- the library: datasets and LoRAs in storage, caption editing, uploads, LoRA tests --------------
const PAGE = 100;

export class LibraryStore extends Store {
  constructor(api) {
    super();
    this.api = api;
    this.datasets = [];
    this.loras = [];
    this.shown = { datasets: PAGE, loras: PAGE }; // how many of each listing to ask for
    this.totals = { datasets: 0, loras: 0 }; // how many there are in the bucket
    this.problems = []; // [{entry, message}]: bucket entries the listings skipped
    this.editor = new Map(); // dataset name -> {images, undo, editing, conflict, report}
    this.upload = null; // the upload being staged (datasets.js)
    this.review = null; // the preparation review: kept when its dialog closes, so "Prepare…" resumes it
    this.tests = new Map(); // LoRA name -> its test (lora_test.js)
  }

  load() {
    return this.guarded(async () => {
      // long listings come a page at a time: the server reads details only for what is shown
      const [datasetList, loraList] = await Promise.all([
        this.api.datasetListing(this.shown.datasets), this.api.loraListing(this.shown.loras)]);
      this.datasets = datasetList.datasets;
      this.loras = loraList.loras;
      this.problems = [datasetList, loraList].flatMap((l) => l.problems || []);
      this.totals = { datasets: datasetList.total ?? datasetList.datasets.length,
                      loras: loraList.total ?? loraList.loras.length };
    });
  }

  more(kind) {
    this.shown[kind] += PAGE;
    return this.load();
  }

  trainable() {
    return this.datasets.filter((d) => d.complete !== false);
  }

  async loadEditor(name) {
    const listing = await this.api.datasetEditor(name);
    const old = this.editor.get(name);
    this.editor.set(name, { images: listing.images, undo: old ? old.undo : [], editing: null, conflict: {},
                            report: old?.report });
    this.changed();
  }

  // A caption written over the generation it was read at; a conflict brings the current one.
  async saveCaption(name, file, text, { undoing = false } = {}) {
    const ed = this.editor.get(name);
    const img = ed.images.find((i) => i.file === file);
    const before = img.caption ?? "";
    try {
      const saved = await this.api.writeCaption(name, file, text, img.generation);
      Object.assign(img, { caption: saved.caption, generation: saved.generation });
      const ds = this.datasets.find((d) => d.name === name);
      if (ds && !before !== !saved.caption) ds.captioned += saved.caption ? 1 : -1; // the card's count follows
      delete ed.conflict[file];
      if (!undoing && before !== saved.caption) ed.undo.push({ file, before, after: saved.caption });
      ed.editing = null;
      return saved;
    } catch (err) {
      if (err.kind === "CaptionConflict" && err.data?.current) {
        Object.assign(img, { caption: err.data.current.caption, generation: err.data.current.generation });
        ed.conflict[file] = err.message;
        ed.editing = null;
      }
      throw err;
    } finally {
      this.changed();
    }
  }

  async undo(name) {
    const ed = this.editor.get(name);
    const last = ed.undo.pop();
    if (!last) return;
    try {
      await this.saveCaption(name, last.file, last.before, { undoing: true });
    } catch (err) {
      ed.undo.push(last); // still there to try again once the conflict is seen
      throw err;
    }
  }

  editCaption(name, file) {
    const ed = this.editor.get(name);
    if (!ed) return;
    ed.editing = file;
    this.changed();
  }

  async validate(name) {
    const ed = this.editor.get(name);
    ed.report = await this.api.validateDataset(name);
    this.changed();
  }

  async deleteDataset(name) {
    await this.api.deleteDataset(name);
    this.editor.delete(name);
    await this.load();
  }

  async deleteLora(name) {
    await this.api.deleteLora(name);
    await this.load();
  }

  async downloadLora(name) {
    const answer = await this.api.downloadLora(name);
    await this.load();
    return answer;
  }

  test(name) {
    if (!this.tests.has(name)) {
      this.tests.set(name, { prompt: null, defaulted: false, promptId: null, state: null, images: [] });
    }
    return this.tests.get(name);
  }

  // Each LoRA's default test prompt, asked once per LoRA (when the listing arrives, not on paint).
  async loadTestDefaults() {
    const asking = this.loras.filter((lora) => !this.test(lora.name).defaulted);
    if (!asking.length) return;
    await Promise.all(asking.map(async (lora) => {
      const t = this.test(lora.name);
      t.defaulted = true;
      try {
        const defaults = await this.api.loraTestDefaults(lora.name);
        if (t.prompt == null) t.prompt = defaults.prompt;
      } catch (err) {
        // the placeholder stays, and Test still sends the server's default
        console.warn("LoRA Cloud: no default prompt for", lora.name, err);
      }
    }));
    this.changed();
  }
}

// ---- sessions: a ComfyUI on a rented GPU, live from EVENTS.session ---------------------------------
export class SessionsStore extends Store {
  constructor(api, { now = () => Date.now() } = {}) {
    super();
    this.api = api;
    this.now = now;
    this.current = null; // the live session's view, or null
    this.at = 0; // when `current` arrived: its cost goes on from there at its $/hr
    this.outputs = [];
    this.problems = [];
    this.templates = [];
    this.loaded = false;
  }

  listen(source) {
    // {session: view} when a session starts, is ready, or ends: no polling
    this.on(source, EVENTS.session, (data) => {
      const view = data.session;
      if (!view) return;
      const ended = !view.live && this.current?.id === view.id;
      if (view.live) this.setCurrent({ ...(this.current?.id === view.id ? this.current : {}), ...view });
      else if (ended) this.current = null;
      this.changed();
      if (ended) this.loadOutputs(); // what it pushed to the bucket before it went
    });
  }

  load() {
    return this.guarded(async () => {
      const [sessions, outputs, templates] = await Promise.all([
        this.api.sessions(), this.api.outputs(), this.api.templateListing()]);
      this.setCurrent(sessions.current);
      this.outputs = outputs.outputs || [];
      this.problems = outputs.problems || [];
      this.templates = templates.templates || [];
      this.loaded = true;
    });
  }

  loadOutputs() {
    return this.guarded(async () => {
      const outputs = await this.api.outputs();
      this.outputs = outputs.outputs || [];
      this.problems = outputs.problems || [];
    });
  }

  setCurrent(view) {
    this.current = view || null;
    this.at = this.now();
  }

  // What the live session has cost so far: its last answer, plus its $/hr since then (no polling).
  costNow() {
    const s = this.current;
    if (!s || typeof s.cost_usd !== "number") return null;
    const rate = s.live && typeof s.dph === "number" ? s.dph : 0;
    return s.cost_usd + (rate * Math.max(0, this.now() - this.at)) / 3_600_000;
  }

  async start(body) {
    this.setCurrent(await this.api.startSession(body));
    this.changed();
    return this.current;
  }

  async stop(id) {
    const answer = await this.api.stopSession(id);
    this.current = null;
    await this.load();
    return answer;
  }
}

// ---- notifications: the channels as set, and the notices the server pushes -----------------------
// Budget news ("warning", "exceeded", "changed" from the poller; "warning", "enforced",
// "enforce_failed" from the watchdog): everything but a change of caps is a notice.
const BUDGET_SEVERITY = { warning: "warn", exceeded: "error", enforced: "error", enforce_failed: "error" };
const MAX_NOTICES = 50;

export class NotificationsStore extends Store {
  constructor(api) {
    super();
    this.api = api;
    this.settings = null; // the channels as set (service/notify/), and the latest deliveries
    this.notices = []; // [{severity, title, message}], newest last
    this.noticeListeners = new Set();
  }

  // fn(notice) for each notice as it arrives (the sidebar shows it as a toast)
  onNotice(fn) {
    this.noticeListeners.add(fn);
    return () => this.noticeListeners.delete(fn);
  }

  notice(severity, title, message) {
    const n = { severity, title, message };
    this.notices.push(n);
    if (this.notices.length > MAX_NOTICES) this.notices.shift();
    for (const fn of [...this.noticeListeners]) fn(n);
    this.changed();
  }

  listen(source) {
    // run done or failed, preempted, budget, idle session
    this.on(source, EVENTS.notify, (n) => this.notice(n.severity || "info", n.title || "LoRA Cloud", n.message || ""));
    // what the guard could not do or had to work around: the server sends each once, until it clears
    this.on(source, EVENTS.guard, (g) => {
      if (g.kind === "problem" && g.message) this.notice("warn", "LoRA Cloud guard", g.message);
    });
    this.on(source, EVENTS.budget, (b) => {
      const severity = BUDGET_SEVERITY[b.kind];
      if (severity && b.message) this.notice(severity, "LoRA Cloud budget", b.message);
    });
  }

  load() {
    return this.guarded(async () => { this.settings = await this.api.notifySettings(); });
  }

  async set(changes) {
    this.settings = await this.api.setNotify(changes);
    this.changed();
  }

  test() {
    return this.api.testNotify();
  }
}

export function createStores(api) {
  return {
    runs: new RunsStore(api),
    instances: new InstancesStore(api),
    library: new LibraryStore(api),
    sessions: new SessionsStore(api),
    notifications: new NotificationsStore(api),
  };
}

// Every store that follows server events starts listening to `source` (ComfyUI's api).
export function listenAll(stores, source) {
  for (const store of Object.values(stores)) if (store.listen) store.listen(source);
}
