// LoRA Cloud: the sidebar's view state, one singleton that outlives the tab: which section is
// shown, what is open or ticked, what is in flight. The data itself lives in the stores
// (stores.js); ComfyUI calls the tab's render() with a fresh element every time it is shown,
// so everything worth keeping lives here or there. No side effects beyond building the singleton.

class ViewState extends EventTarget {
  constructor() {
    super();
    this.tab = "instances"; // the section shown: instances, datasets, training, loras, generate
    this.busy = new Set(); // action keys in flight, e.g. "stop:77"
    this.armed = new Set(); // danger buttons waiting for their second click
    this.dialog = null; // the large view: {id, title, render, opener} or null
    this.openDataset = null;
    this.openRun = null; // a past run shown as a full card
    this.trainFilter = { state: "all", dataset: "all" };
    this.compare = new Set(); // run ids ticked for comparison
    this.comparison = null; // the runs being compared: {ids, configs, samples, loading}
    this.config = null; // the config editor: {form, result, presets}
    this.quick = { dataset: "", lora_type: "character" }; // quick launch
    this.session = { idleMinutes: 20, gpu: "" }; // the Generate section's start form
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }

  set(fields) {
    Object.assign(this, fields);
    this.changed();
  }
}

export const loraCloudState = new ViewState();
