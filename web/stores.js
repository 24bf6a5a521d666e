// LoRA Cloud: one store per noun the sidebar shows (runs, instances, library, sessions,
// notifications), each in its own module. Each owns its data, fetches it through the api object it
// is given (api.js) and follows the server events it listens to; sections subscribe and paint, and
// never fetch. No DOM, no ComfyUI: tests/js runs them under Node with a fake api and event source.
//
// No side effects at import: ComfyUI imports every .js file in this folder as a module.
import { InstancesStore } from "./store_instances.js";
import { LibraryStore } from "./store_library.js";
import { NotificationsStore } from "./store_notifications.js";
import { RunsStore } from "./store_runs.js";
import { SessionsStore } from "./store_sessions.js";

export { Store } from "./store.js";
export { BILLING, InstancesStore } from "./store_instances.js";
export { LibraryStore } from "./store_library.js";
export { NotificationsStore } from "./store_notifications.js";
export { FAILED, RunsStore } from "./store_runs.js";
export { SessionsStore } from "./store_sessions.js";

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
