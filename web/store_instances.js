// LoRA Cloud: the instances store: rented GPUs, their logs, costs and budgets, live from the
// instance, budget and run events.
// No side effects at import: ComfyUI imports every .js file in this folder as a module.
import { EVENTS } from "./events.js";
import { Store } from "./store.js";

export const BILLING = ["running", "loading", "creating"];

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
