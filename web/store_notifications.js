// LoRA Cloud: the notifications store: the channels as set, and the notices the server pushes
// (notify, guard and budget events).
// No side effects at import: ComfyUI imports every .js file in this folder as a module.
import { EVENTS } from "./events.js";
import { Store } from "./store.js";

// Budget news ("warning", "exceeded", "changed" from the poller; "warning", "enforced",
// "enforce_failed" from the watchdog): everything but a change of caps is a notice.
// a budget crossing (warning, exceeded, enforced) reaches the user once, as the notifier's toast
// (the notify event, exactly once per crossing); only what the notifier does not tell is told here
const BUDGET_SEVERITY = { enforce_failed: "error" };
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
