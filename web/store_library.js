// LoRA Cloud: the library store: datasets and LoRAs in storage, caption editing over generations,
// the upload being staged and its preparation review, the LoRA tests. The server pushes nothing
// for these: they load when asked.
// No side effects at import: ComfyUI imports every .js file in this folder as a module.
import { Store } from "./store.js";

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
