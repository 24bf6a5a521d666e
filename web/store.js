// LoRA Cloud: what every store shares (stores.js lists them): subscribers told of each change, the
// server's events followed from an event source, a load's failure kept in words. No DOM, no
// ComfyUI (tests/js runs the stores under Node).
// No side effects at import: ComfyUI imports every .js file in this folder as a module.
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
