// LoRA Cloud: the sessions store: a ComfyUI on a rented GPU, live from the session events (no
// polling), its outputs and the workflow templates.
// No side effects at import: ComfyUI imports every .js file in this folder as a module.
import { EVENTS } from "./events.js";
import { Store } from "./store.js";

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
        this.api.sessions(), this.api.outputs(), this.api.templates()]);
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
