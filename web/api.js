// LoRA Cloud: every request the sidebar makes, in one place: every URL is built here.
// createApi(transport) takes ComfyUI's api (fetchApi, apiURL) in the page, a fake under Node
// (tests/js), so nothing here imports ComfyUI. No side effects at import: ComfyUI imports every
// .js file in this folder as a module.
const BASE = "/lora_cloud/api";
const TOKEN_HEADER = "X-LoRA-Cloud-Token";

export class LoraCloudApiError extends Error {
  constructor(message, status, kind, data) {
    super(message);
    this.status = status;
    this.kind = kind;
    this.data = data; // the whole JSON answer (a caption conflict carries `current`)
  }
}

export function createApi(transport) {
  let tokenPromise = null;

  // The per-install token guards every request that spends money, writes or deletes.
  // It is read from a same-origin GET once and kept in memory only.
  function token(refresh = false) {
    if (refresh || !tokenPromise) {
      tokenPromise = request("/token").then((body) => body.token);
      tokenPromise.catch(() => { tokenPromise = null; });
    }
    return tokenPromise;
  }

  // `raw`: bytes sent as application/octet-stream (a staged upload) instead of a JSON body.
  async function request(path, { method = "GET", body, raw, retried = false } = {}) {
    const init = { method, headers: {} };
    if (method !== "GET") {
      init.headers["Content-Type"] = raw ? "application/octet-stream" : "application/json";
      init.headers[TOKEN_HEADER] = await token();
      init.body = raw ?? JSON.stringify(body ?? {});
    }
    const resp = await transport.fetchApi(BASE + path, init);
    let data = null;
    try {
      data = await resp.json();
    } catch {
      data = null;
    }
    if (!resp.ok) {
      if (resp.status === 403 && data?.error === "BadToken" && !retried) {
        await token(true); // the token file was replaced (a new install): fetch it again once
        return request(path, { method, body, raw, retried: true });
      }
      if (resp.status === 422 && data && data.ok === false) return data; // a refused upload: its reason
      throw new LoraCloudApiError(data?.message || `HTTP ${resp.status}`, resp.status, data?.error, data);
    }
    return data;
  }

  const url = (path) => transport.apiURL(BASE + path);

  return {
    instances: () => request("/instances").then((b) => b.instances),
    stopInstance: (id) => request(`/instances/${enc(id)}/stop`, { method: "POST" }),
    destroyInstance: (id) => request(`/instances/${enc(id)}/destroy`, { method: "POST" }),
    instanceLogs: (id, tail = 200) => request(`/instances/${enc(id)}/logs?tail=${tail}`).then((b) => b.logs),

    costs: () => request("/costs"),
    budgets: () => request("/budgets"),
    setBudgets: (changes) => request("/budgets", { method: "POST", body: changes }),

    // listings answer {items..., problems}: bucket entries they skipped because they cannot be read
    runListing: () => request("/runs"),
    run: (id) => request(`/runs/${enc(id)}`),
    stopRun: (id) => request(`/runs/${enc(id)}/stop`, { method: "POST" }),
    startRun: (body) => request("/runs", { method: "POST", body }),
    runEvents: (id, since = 0) => request(`/runs/${enc(id)}/events?since=${since}`),
    sampleUrl: (id, file) => url(`/runs/${enc(id)}/samples/${enc(file)}`),

    // long listings come a page at a time: {..., total, offset, limit}
    datasetListing: (limit = 100, offset = 0) => request(`/datasets?limit=${limit}&offset=${offset}`),
    datasetImages: (name) => request(`/datasets/${enc(name)}/images`).then((b) => b.images),
    thumbUrl: (name, file, size = 128) => url(`/datasets/${enc(name)}/thumbs/${enc(file)}?size=${size}`),
    deleteDataset: (name) => request(`/datasets/${enc(name)}`, { method: "DELETE" }),

    loraListing: (limit = 100, offset = 0) => request(`/loras?limit=${limit}&offset=${offset}`),
    loraMetadata: (name) => request(`/loras/${enc(name)}/metadata`),
    downloadLora: (name) => request(`/loras/${enc(name)}/download`, { method: "POST" }),
    deleteLora: (name) => request(`/loras/${enc(name)}`, { method: "DELETE" }),

    // trying a LoRA (web/lora_test.js): queue a template on this ComfyUI, follow it, show its image
    loraTestDefaults: (name) => request(`/loras/${enc(name)}/test`),
    testLora: (name, body) => request(`/loras/${enc(name)}/test`, { method: "POST", body }),
    loraTestStatus: (id) => request(`/lora_tests/${enc(id)}`),
    loraTestImageUrl: (id, index = 0) => url(`/lora_tests/${enc(id)}/images/${index}`),

    // dataset editing: captions over their generation (409 CaptionConflict carries `current`)
    datasetEditor: (name) => request(`/datasets/${enc(name)}/editor`),
    writeCaption: (name, file, caption, generation) =>
      request(`/datasets/${enc(name)}/captions/${enc(file)}`, { method: "PUT", body: { caption, generation } }),
    validateDataset: (name) => request(`/datasets/${enc(name)}/validate`),
    imageUrl: (name, file) => url(`/datasets/${enc(name)}/images/${enc(file)}`),

    // staged uploads and the preparation review
    uploadStatus: (name) => request(`/uploads/${enc(name)}`),
    uploadFile: (name, file, bytes, sha256) =>
      request(`/uploads/${enc(name)}/files/${enc(file)}${sha256 ? `?sha256=${sha256}` : ""}`, { method: "PUT", raw: bytes }),
    removeUploadFile: (name, file) => request(`/uploads/${enc(name)}/files/${enc(file)}`, { method: "DELETE" }),
    discardUpload: (name) => request(`/uploads/${enc(name)}`, { method: "DELETE" }),
    prepareUpload: (name, body) => request(`/uploads/${enc(name)}/prepare`, { method: "POST", body }),
    reviewUpload: (name) => request(`/uploads/${enc(name)}/review`),
    uploadImageUrl: (name, stage, file) => url(`/uploads/${enc(name)}/${stage}/${enc(file)}`),
    publishUpload: (name, body) => request(`/uploads/${enc(name)}/publish`, { method: "POST", body }),

    // the config editor and run comparison
    presets: () => request("/train/presets"),
    checkConfig: (body) => request("/train/check", { method: "POST", body }),
    runConfig: (id) => request(`/runs/${enc(id)}/config`),

    // notifications: channels on or off, a test
    notifySettings: () => request("/notify"),
    setNotify: (changes) => request("/notify/settings", { method: "POST", body: changes }),
    testNotify: () => request("/notify/test", { method: "POST" }),

    // remote ComfyUI sessions (the Generate section), their outputs, the workflow templates
    sessions: () => request("/sessions"),
    startSession: (body) => request("/sessions", { method: "POST", body }),
    stopSession: (id) => request(`/sessions/${enc(id)}/stop`, { method: "POST" }),
    openSession: (id) => request(`/sessions/${enc(id)}/open`, { method: "POST" }),
    outputs: (limit = 24) => request(`/outputs?limit=${limit}`),
    outputUrl: (session, file) => url(`/outputs/${enc(session)}/${enc(file)}`),
    templates: () => request("/templates"),
    templateGraph: (name) => request(`/templates/${enc(name)}`),
  };
}

const enc = encodeURIComponent;
