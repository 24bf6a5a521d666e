import { test } from "node:test";
import assert from "node:assert/strict";

import { createApi, LoraCloudApiError } from "../../web/api.js";
import { fakeTransport } from "./fakes.mjs";

test("a GET goes to the pack's prefix with no token and no body", async () => {
  const t = fakeTransport({ "GET /instances": { instances: [{ id: "7" }] } });
  const api = createApi(t);
  assert.deepEqual(await api.instances(), [{ id: "7" }]);
  assert.deepEqual(t.requests, [{ method: "GET", path: "/instances", headers: {}, body: undefined }]);
});

test("a change carries the token (fetched once) and a JSON body", async () => {
  const t = fakeTransport({ "GET /token": { token: "tok-1" }, "POST /budgets": { ok: true },
                            "POST /runs/r%2F1/stop": { stopped: true } });
  const api = createApi(t);
  await api.setBudgets({ max_month_usd: 75 });
  await api.stopRun("r/1"); // names are encoded into the path
  const [token, budgets, stop] = t.requests;
  assert.equal(token.path, "/token");
  assert.equal(budgets.headers["X-LoRA-Cloud-Token"], "tok-1");
  assert.equal(budgets.headers["Content-Type"], "application/json");
  assert.equal(budgets.body, '{"max_month_usd":75}');
  assert.equal(stop.path, "/runs/r%2F1/stop");
  assert.equal(stop.body, "{}");
  assert.equal(t.requests.filter((r) => r.path === "/token").length, 1);
});

test("a replaced token is fetched again once and the request resent", async () => {
  let tokens = 0;
  let posts = 0;
  const t = fakeTransport({
    "GET /token": () => ({ token: `tok-${++tokens}` }),
    "POST /notify/test": (init) => (++posts === 1 ? { status: 403, body: { error: "BadToken", message: "stale" } }
      : { sent: init.headers["X-LoRA-Cloud-Token"] }),
  });
  const answer = await createApi(t).testNotify();
  assert.deepEqual(answer, { sent: "tok-2" });
  assert.equal(tokens, 2);
});

test("an error answer becomes a LoraCloudApiError with the server's words, kind and data", async () => {
  const t = fakeTransport({ "GET /token": { token: "x" },
                            "PUT /datasets/cats/captions/a.png": { status: 409, body: {
                              error: "CaptionConflict", message: "changed by someone else", current: { generation: 3 } } } });
  await assert.rejects(createApi(t).writeCaption("cats", "a.png", "new", 2), (err) => {
    assert.ok(err instanceof LoraCloudApiError);
    assert.equal(err.status, 409);
    assert.equal(err.kind, "CaptionConflict");
    assert.equal(err.message, "changed by someone else");
    assert.equal(err.data.current.generation, 3);
    return true;
  });
  assert.equal(t.requests.at(-1).body, '{"caption":"new","generation":2}');
});

test("an upload refused with a reason (422, ok false) is an answer, not an error; bytes go raw", async () => {
  const t = fakeTransport({ "GET /token": { token: "x" },
                            "PUT /uploads/dogs/files/fake.jpg": { status: 422, body: { ok: false, reason: "not an image" } } });
  const bytes = new Uint8Array([1, 2, 3]);
  assert.deepEqual(await createApi(t).uploadFile("dogs", "fake.jpg", bytes, "ab12"), { ok: false, reason: "not an image" });
  const put = t.requests.at(-1);
  assert.equal(put.path, "/uploads/dogs/files/fake.jpg?sha256=ab12");
  assert.equal(put.headers["Content-Type"], "application/octet-stream");
  assert.equal(put.body, bytes);
});

test("an answer that is not JSON says its HTTP status", async () => {
  const t = { apiURL: (p) => p, fetchApi: async () => ({ ok: false, status: 502, json: async () => { throw new SyntaxError("html"); } }) };
  await assert.rejects(createApi(t).costs(), /HTTP 502/);
});

test("URLs for images go through the transport's apiURL, names encoded", () => {
  const api = createApi(fakeTransport({}));
  assert.equal(api.thumbUrl("my cats", "a b.png", 256), "/api/lora_cloud/api/datasets/my%20cats/thumbs/a%20b.png?size=256");
  assert.equal(api.outputUrl("s1", "x.png"), "/api/lora_cloud/api/outputs/s1/x.png");
  assert.equal(api.sampleUrl("run-1", "s_0250.png"), "/api/lora_cloud/api/runs/run-1/samples/s_0250.png");
});

test("sessions and templates have their routes here", async () => {
  const t = fakeTransport({ "GET /token": { token: "x" }, "GET /sessions": { current: null },
                            "POST /sessions/s%201/open": { url: "http://127.0.0.1:1/" },
                            "GET /templates/basic": { nodes: [] }, "GET /outputs": { outputs: [] } });
  const api = createApi(t);
  assert.deepEqual(await api.sessions(), { current: null });
  assert.deepEqual(await api.openSession("s 1"), { url: "http://127.0.0.1:1/" });
  assert.deepEqual(await api.templateGraph("basic"), { nodes: [] });
  await api.outputs();
  assert.equal(t.requests.at(-1).path, "/outputs?limit=24");
});
