import { test } from "node:test";
import assert from "node:assert/strict";

import { createApi } from "../../web/api.js";
import { EVENTS } from "../../web/events.js";
import { createStores, InstancesStore, LibraryStore, listenAll, NotificationsStore, RunsStore, SessionsStore }
  from "../../web/stores.js";
import { FakeSource, fakeTransport, settle } from "./fakes.mjs";

const RUN = { id: "run-1", live: true, state: "training", step: 250, total_steps: 1000, loss: 0.5 };
const EVENTS_ANSWER = { events: [{ kind: "progress", step: 100, loss: 0.9 }, { kind: "state" }, { kind: "progress", step: 200, loss: 0.7 }],
                        next: 3 };

function counting(store) {
  const seen = { changes: 0 };
  store.subscribe(() => { seen.changes += 1; });
  return seen;
}

// ---- runs ------------------------------------------------------------------------------------------
test("runs: load lists the runs, reads the live ones in full and their loss history", async () => {
  const t = fakeTransport({
    "GET /runs": { runs: [{ ...RUN, samples: undefined }, { id: "run-0", live: false, state: "done" }],
                   problems: [{ entry: "runs/x", message: "unreadable" }] },
    "GET /runs/run-1": { ...RUN, samples: ["s_0250.png"] },
    "GET /runs/run-1/events": EVENTS_ANSWER,
  });
  const runs = new RunsStore(createApi(t));
  const seen = counting(runs);
  await runs.load();
  assert.deepEqual([...runs.runs.keys()], ["run-1", "run-0"]);
  assert.deepEqual(runs.runs.get("run-1").samples, ["s_0250.png"]);
  assert.deepEqual(runs.loss.get("run-1"), [[100, 0.9], [200, 0.7], [250, 0.5]]);
  assert.equal(runs.history.get("run-1"), 3);
  assert.deepEqual(runs.problems, [{ entry: "runs/x", message: "unreadable" }]);
  assert.deepEqual(runs.live().map((r) => r.id), ["run-1"]);
  assert.ok(seen.changes >= 1);
  assert.ok(!t.requests.some((r) => r.path.startsWith("/runs/run-0")), "a past run is not read in full");
});

test("runs: a pushed run event updates the run and grows its loss by step, keeping samples", async () => {
  let now = 0;
  const t = fakeTransport({ "GET /runs/run-1/events": { events: [], next: 0 } });
  const runs = new RunsStore(createApi(t), { now: () => now });
  const source = new FakeSource();
  runs.listen(source);
  const seen = counting(runs);
  runs.upsert({ ...RUN, samples: ["a.png"] }, false);
  runs.historyAt.set("run-1", 500);
  now = 1000; // within the history's 30 s: no read
  source.send(EVENTS.run, { id: "run-1", live: true, step: 300, loss: 0.4 });
  source.send(EVENTS.run, { id: "run-1", live: true, step: 300, loss: 0.35 }); // the same step again: replaced
  source.send(EVENTS.run, { id: "run-1", live: true, step: 290, loss: 0.1 }); // older: not appended
  assert.equal(seen.changes, 3);
  assert.deepEqual(runs.loss.get("run-1"), [[250, 0.5], [300, 0.35]]);
  assert.deepEqual(runs.runs.get("run-1").samples, ["a.png"]);
  assert.equal(runs.runs.get("run-1").step, 290);
  assert.equal(t.requests.length, 0);
  now = 31_000; // a live run's events are read again now and then
  source.send(EVENTS.run, { id: "run-1", live: true, step: 310, loss: 0.3 });
  await settle();
  assert.deepEqual(t.requests.map((r) => r.path), ["/runs/run-1/events?since=0"]);
});

test("runs: a run that ended stays watched; merging history keeps steps sorted and bounded", () => {
  const runs = new RunsStore(createApi(fakeTransport({})));
  runs.upsert(RUN, false);
  runs.upsert({ id: "run-1", live: false, state: "done" }, false);
  assert.ok(runs.watched.has("run-1"));
  runs.mergeLoss("run-1", [[50, 1.0], [260, 0.45], ["x", 1], [70, NaN]]);
  assert.deepEqual(runs.loss.get("run-1"), [[50, 1.0], [250, 0.5], [260, 0.45]]);
  runs.mergeLoss("run-2", Array.from({ length: 600 }, (_, i) => [i, 1 / (i + 1)]));
  assert.equal(runs.loss.get("run-2").length, 500);
  assert.equal(runs.loss.get("run-2")[0][0], 100);
});

test("runs: stop and start reload the listing; a comparison gathers configs and samples", async () => {
  const t = fakeTransport({
    "GET /token": { token: "x" }, "POST /runs/run-1/stop": { stopped: "run-1" }, "POST /runs": { run_id: "run-2" },
    "GET /runs": { runs: [] }, "GET /runs/a/config": { config: { rank: 16 } }, "GET /runs/b/config": { status: 404, body: { message: "gone" } },
    "GET /runs/a": { id: "a", samples: ["s_1.png"] }, "GET /runs/b": { id: "b" },
    "GET /runs/a/events": { events: [], next: 0 }, "GET /runs/b/events": { events: [], next: 0 },
  });
  const runs = new RunsStore(createApi(t));
  assert.deepEqual(await runs.stop("run-1"), { stopped: "run-1" });
  assert.deepEqual(await runs.start({ dataset: "cats" }), { run_id: "run-2" });
  assert.equal(t.requests.filter((r) => r.path === "/runs" && r.method === "GET").length, 2);
  const cmp = await runs.comparison(["a", "b"]);
  assert.deepEqual(cmp, { configs: { a: { rank: 16 }, b: { problem: "gone" } }, samples: { a: ["s_1.png"], b: [] } });
});

test("runs: a failed load keeps its words for the sidebar, the next good one clears them", async () => {
  let fail = true;
  const t = fakeTransport({ "GET /runs": () => (fail ? { status: 500, body: { message: "bucket unreachable" } } : { runs: [] }) });
  const runs = new RunsStore(createApi(t));
  await runs.load();
  assert.equal(runs.error, "bucket unreachable");
  fail = false;
  await runs.load();
  assert.equal(runs.error, null);
});

// ---- instances -------------------------------------------------------------------------------------
test("instances: pushed instances replace the list and the costs are read again", async () => {
  let now = 5;
  const t = fakeTransport({ "GET /costs": { today_usd: 1 } });
  const instances = new InstancesStore(createApi(t), { now: () => now });
  const source = new FakeSource();
  instances.listen(source);
  source.send(EVENTS.instance, { instances: [{ id: "7", state: "running" }, { id: "8", state: "stopped" }] });
  await settle();
  assert.deepEqual(instances.billing().map((i) => i.id), ["7"]);
  assert.equal(instances.at, 5);
  assert.deepEqual(instances.costs, { today_usd: 1 });
  assert.deepEqual(t.requests.map((r) => r.path), ["/costs"]);
});

test("instances: a run that ended reloads them (its instance went); budget news reads costs", async () => {
  const t = fakeTransport({ "GET /instances": { instances: [] }, "GET /costs": { today_usd: 2 } });
  const instances = new InstancesStore(createApi(t));
  const source = new FakeSource();
  instances.listen(source);
  instances.setInstances([{ id: "7", state: "running", run_id: "run-1" }]);
  source.send(EVENTS.run, { id: "other", live: false });
  source.send(EVENTS.run, { id: "run-1", live: true });
  await settle();
  assert.equal(t.requests.length, 0);
  source.send(EVENTS.run, { id: "run-1", live: false });
  await settle();
  assert.deepEqual(instances.instances, []);
  source.send(EVENTS.budget, { kind: "warning" });
  await settle();
  assert.deepEqual(t.requests.map((r) => r.path).sort(), ["/costs", "/costs", "/instances"]);
});

test("instances: stop, destroy, logs and budget go through the api and reload", async () => {
  const t = fakeTransport({ "GET /token": { token: "x" }, "POST /instances/7/stop": {}, "POST /instances/7/destroy": {},
                            "GET /instances": { instances: [] }, "GET /costs": {}, "GET /instances/7/logs": { logs: "started" },
                            "POST /budgets": {} });
  const instances = new InstancesStore(createApi(t));
  await instances.stop("7");
  await instances.destroy("7");
  await instances.toggleLogs("7");
  assert.equal(instances.logs.get("7"), "started");
  await instances.toggleLogs("7");
  assert.equal(instances.logs.has("7"), false);
  await instances.setBudget({ max_month_usd: 10 });
  assert.deepEqual(t.requests.filter((r) => r.method === "POST").map((r) => r.path),
    ["/instances/7/stop", "/instances/7/destroy", "/budgets"]);
});

// ---- library ---------------------------------------------------------------------------------------
test("library: listings a page at a time, their totals and problems; more asks for the next page", async () => {
  const t = fakeTransport({
    "GET /datasets": (init, path) => ({ datasets: [{ name: "cats", complete: true }, { name: "half", complete: false }],
                                        total: 150, problems: [{ entry: "d", message: path }] }),
    "GET /loras": { loras: [{ name: "cat-v1" }], total: 1 },
  });
  const library = new LibraryStore(createApi(t));
  await library.load();
  assert.deepEqual(library.trainable().map((d) => d.name), ["cats"]);
  assert.deepEqual(library.totals, { datasets: 150, loras: 1 });
  assert.deepEqual(library.problems, [{ entry: "d", message: "/datasets?limit=100&offset=0" }]);
  await library.more("datasets");
  assert.equal(t.requests.at(-2).path, "/datasets?limit=200&offset=0");
});

test("library: a caption saved over its generation, counted, undone; a conflict brings theirs", async () => {
  let generation = 1;
  const t = fakeTransport({
    "GET /token": { token: "x" },
    "GET /datasets/cats/editor": { images: [{ file: "a.png", caption: "", generation: 1 }] },
    "PUT /datasets/cats/captions/a.png": (init) => {
      const body = JSON.parse(init.body);
      if (body.generation !== generation) {
        return { status: 409, body: { error: "CaptionConflict", message: "changed by someone else",
                                      current: { caption: "theirs", generation } } };
      }
      generation += 1;
      return { caption: body.caption, generation };
    },
  });
  const library = new LibraryStore(createApi(t));
  library.datasets = [{ name: "cats", captioned: 0 }];
  await library.loadEditor("cats");
  library.editCaption("cats", "a.png");
  assert.equal(library.editor.get("cats").editing, "a.png");
  await library.saveCaption("cats", "a.png", "a cat");
  const ed = library.editor.get("cats");
  assert.equal(ed.editing, null);
  assert.deepEqual(ed.images[0], { file: "a.png", caption: "a cat", generation: 2 });
  assert.equal(library.datasets[0].captioned, 1);
  assert.deepEqual(ed.undo, [{ file: "a.png", before: "", after: "a cat" }]);
  await library.undo("cats");
  assert.equal(ed.images[0].caption, "");
  assert.equal(library.datasets[0].captioned, 0);
  assert.deepEqual(ed.undo, []);

  generation = 9; // someone else wrote it meanwhile
  await assert.rejects(library.saveCaption("cats", "a.png", "mine"), /changed by someone else/);
  assert.deepEqual(ed.images[0], { file: "a.png", caption: "theirs", generation: 9 });
  assert.equal(ed.conflict["a.png"], "changed by someone else");
});

test("library: LoRA test prompts are asked once per LoRA, and only when there are new ones", async () => {
  const t = fakeTransport({ "GET /loras/cat-v1/test": { prompt: "sks cat" }, "GET /loras/dog/test": { status: 500, body: {} } });
  const library = new LibraryStore(createApi(t));
  library.loras = [{ name: "cat-v1" }, { name: "dog" }];
  const seen = counting(library);
  await library.loadTestDefaults();
  await library.loadTestDefaults();
  assert.equal(library.test("cat-v1").prompt, "sks cat");
  assert.equal(library.test("dog").prompt, null);
  assert.equal(t.requests.length, 2);
  assert.equal(seen.changes, 1);
});

// ---- sessions --------------------------------------------------------------------------------------
test("sessions: pushed session events update the current one without any polling", async () => {
  const t = fakeTransport({ "GET /outputs": { outputs: [{ session: "s1", file: "x.png" }] } });
  const sessions = new SessionsStore(createApi(t));
  const source = new FakeSource();
  sessions.listen(source);
  source.send(EVENTS.session, { kind: "starting", id: "s1", session: { id: "s1", live: true, state: "starting", dph: 0.3 } });
  source.send(EVENTS.session, { kind: "ready", id: "s1", session: { id: "s1", live: true, state: "ready" } });
  assert.deepEqual(sessions.current, { id: "s1", live: true, state: "ready", dph: 0.3 });
  assert.equal(t.requests.length, 0);
  source.send(EVENTS.session, { kind: "stopped", id: "other", session: { id: "other", live: false } });
  assert.equal(sessions.current.id, "s1");
  source.send(EVENTS.session, { kind: "idle_stopped", id: "s1", session: { id: "s1", live: false } });
  await settle();
  assert.equal(sessions.current, null);
  assert.deepEqual(t.requests.map((r) => r.path), ["/outputs?limit=24"]); // what it made before it went
  assert.deepEqual(sessions.outputs, [{ session: "s1", file: "x.png" }]);
});

test("sessions: the cost goes on at the session's $/hr from its last answer", () => {
  let now = 1_000;
  const sessions = new SessionsStore(createApi(fakeTransport({})), { now: () => now });
  const source = new FakeSource();
  sessions.listen(source);
  assert.equal(sessions.costNow(), null);
  source.send(EVENTS.session, { kind: "ready", id: "s1", session: { id: "s1", live: true, dph: 0.5, cost_usd: 1 } });
  now += 1_800_000; // half an hour
  assert.equal(sessions.costNow(), 1.25);
});

test("sessions: load, start and stop through the api", async () => {
  const t = fakeTransport({ "GET /token": { token: "x" }, "GET /sessions": { current: null },
                            "GET /outputs": { outputs: [], problems: [{ entry: "o" }] }, "GET /templates": { templates: [{ name: "t" }] },
                            "POST /sessions": { id: "s2", live: true, state: "starting" }, "POST /sessions/s2/stop": { stopped: true } });
  const sessions = new SessionsStore(createApi(t));
  await sessions.load();
  assert.equal(sessions.loaded, true);
  assert.deepEqual(sessions.templates, [{ name: "t" }]);
  assert.equal(sessions.problems.length, 1);
  await sessions.start({ idle_minutes: 10 });
  assert.equal(sessions.current.id, "s2");
  assert.equal(t.requests.find((r) => r.method === "POST").body, '{"idle_minutes":10}');
  await sessions.stop("s2");
  assert.equal(sessions.current, null);
});

// ---- notifications ---------------------------------------------------------------------------------
test("notifications: notices from notify, guard and a failed enforcement; a crossing is the notifier's toast, a change of caps none", () => {
  const notifications = new NotificationsStore(createApi(fakeTransport({})));
  const source = new FakeSource();
  notifications.listen(source);
  const heard = [];
  notifications.onNotice((n) => heard.push(n));
  source.send(EVENTS.notify, { title: "Run done", message: "cat-v1 is ready", severity: "success" });
  source.send(EVENTS.guard, { kind: "problem", message: "config.toml unreadable" });
  source.send(EVENTS.guard, { kind: "resolved", message: "fine again" });
  source.send(EVENTS.budget, { kind: "changed", message: "caps changed" });
  source.send(EVENTS.budget, { kind: "exceeded", message: "over budget" }); // the notifier's toast tells it
  source.send(EVENTS.budget, { kind: "enforce_failed", message: "could not destroy 7" });
  source.send(EVENTS.notify, {});
  assert.deepEqual(heard, [
    { severity: "success", title: "Run done", message: "cat-v1 is ready" },
    { severity: "warn", title: "LoRA Cloud guard", message: "config.toml unreadable" },
    { severity: "error", title: "LoRA Cloud budget", message: "could not destroy 7" },
    { severity: "info", title: "LoRA Cloud", message: "" },
  ]);
  assert.equal(notifications.notices.length, 4);
});

test("notifications: settings loaded and set through the api", async () => {
  const t = fakeTransport({ "GET /token": { token: "x" }, "GET /notify": { toast: true },
                            "POST /notify/settings": (init) => ({ toast: JSON.parse(init.body).notify_toast }) });
  const notifications = new NotificationsStore(createApi(t));
  await notifications.load();
  assert.deepEqual(notifications.settings, { toast: true });
  await notifications.set({ notify_toast: false });
  assert.deepEqual(notifications.settings, { toast: false });
});

// ---- all of them -----------------------------------------------------------------------------------
test("createStores and listenAll: one store per noun, each listening to the one source", () => {
  const stores = createStores(createApi(fakeTransport({})));
  assert.deepEqual(Object.keys(stores).sort(), ["instances", "library", "notifications", "runs", "sessions"]);
  const names = [];
  const source = { addEventListener: (name) => names.push(name) };
  listenAll(stores, source);
  assert.deepEqual([...new Set(names)].sort(), Object.values(EVENTS).filter((n) => n !== EVENTS.preemption).sort());
});
