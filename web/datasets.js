// LoRA Cloud sidebar section "Datasets": upload by drag and drop (checked on arrival, resumable),
// the datasets in the bucket with inline caption editing (saved over the caption's generation,
// with undo), validation, and the preparation pipeline in the large view:
// select type -> auto-caption -> review (keep, drop or edit each image, see the crop) -> save.
// No side effects at import; bucket text only ever becomes text nodes.
import { closeDialog, openDialog } from "./dialog.js";
import { loraCloudApi as lc, stores } from "./live.js";
import { loraCloudState as state } from "./state.js";
import { act, button, dangerButton, empty, h, moreButton, section, select, size, toast } from "./ui.js";

const { library } = stores;

// Publish; when a live run trains on the dataset (409 DatasetInUse, with its runs), ask once and
// resend with force: replacing it could make that run train on a mix of old and new images.
export async function publishOrAskToForce(name, body, ask = (text) => window.confirm(text)) {
  try {
    return await lc.publishUpload(name, body);
  } catch (err) {
    if (err?.status !== 409 || err.kind !== "DatasetInUse") throw err;
    const runs = (err.data?.runs || []).join(", ");
    if (!ask(`Dataset ${name} is used by live run(s) ${runs}. Changing it now can make a run train on a mix of `
      + "old and new images, or resume on other images. Replace anyway?")) throw err;
    return lc.publishUpload(name, { ...body, force: true });
  }
}

const DATASET_FILE = /\.(jpe?g|jpe|png|webp|bmp|gif|tiff?|txt)$/i;
const PARALLEL = 3;

// ---- upload: drag and drop, staged and checked on arrival, resumable ---------------------------
function upload() {
  if (!library.upload) {
    library.upload = { name: "", files: new Map(), running: false, staged: null, result: null, mode: "create" };
  }
  return library.upload;
}

// A dropped folder's files keep their folder path in the name ("cats/a/1.jpg" -> "a_1.jpg").
function flatName(path) {
  const parts = path.split("/").filter(Boolean);
  if (parts.length > 1) parts.shift(); // the folder that was dropped
  return parts.join("_");
}

async function filesFromEntry(entry, out) {
  if (entry.isFile) {
    const file = await new Promise((ok, fail) => entry.file(ok, fail));
    out.push({ file, path: entry.fullPath.replace(/^\//, "") });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      if (!batch.length) break;
      for (const child of batch) await filesFromEntry(child, out);
    }
  }
}

async function droppedFiles(dataTransfer) {
  const out = [];
  const entries = [...(dataTransfer.items || [])].map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  if (entries.length && entries.every(Boolean)) {
    for (const entry of entries) await filesFromEntry(entry, out);
  } else {
    for (const file of dataTransfer.files || []) out.push({ file, path: file.webkitRelativePath || file.name });
  }
  return out;
}

async function sha256(bytes) {
  if (!globalThis.crypto?.subtle) return null; // plain http on a LAN name: no WebCrypto, size only
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function stagedFor(name) {
  const status = await lc.uploadStatus(name);
  return new Map(status.files.map((f) => [f.file, f]));
}

async function addFiles(picked) {
  const u = upload();
  const name = u.name.trim();
  if (!name) {
    toast("error", "LoRA Cloud", "Name the dataset first");
    return;
  }
  if (u.running) return;
  u.running = true;
  // what an earlier upload already left there (resume); asking also checks the name by the
  // server's own rule (the CLI's), so a refused name is said in its words before a byte is sent
  let staged;
  try {
    staged = await stagedFor(name);
  } catch (err) {
    u.running = false;
    toast("error", "LoRA Cloud", err.message);
    return;
  }
  const files = picked
    .map(({ file, path }) => ({ file, name: flatName(path) }))
    .filter(({ name: n }) => !n.split("_").some((p) => p.startsWith(".")));
  for (const { file, name: n } of files) {
    u.files.set(n, DATASET_FILE.test(n)
      ? { size: file.size, state: "queued", file }
      : { size: file.size, state: "refused", reason: "not an image or a .txt caption" });
  }
  library.changed();
  try {
    const queue = [...u.files.entries()].filter(([, f]) => f.state === "queued");
    const worker = async () => {
      while (queue.length) {
        const [n, f] = queue.shift();
        f.state = "sending";
        library.changed();
        try {
          const bytes = await f.file.arrayBuffer();
          const digest = await sha256(bytes);
          const there = staged.get(n);
          if (there && there.size === bytes.byteLength && (!digest || there.sha256 === digest)) {
            Object.assign(f, { state: "staged", resumed: true });
          } else {
            const answer = await lc.uploadFile(name, n, bytes, digest);
            Object.assign(f, answer.ok ? { state: "staged" } : { state: "refused", reason: answer.reason });
          }
        } catch (err) {
          Object.assign(f, { state: "failed", reason: err.message });
        }
        delete f.file;
        library.changed();
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, worker));
    u.staged = await stagedFor(name);
  } catch (err) {
    toast("error", "LoRA Cloud", err.message);
  } finally {
    u.running = false;
    library.changed();
  }
}

async function lookUpStaged() {
  const u = upload();
  const name = u.name.trim();
  if (!name || u.running) return;
  try {
    u.staged = await stagedFor(name);
    library.changed();
  } catch (err) {
    u.staged = null;
  }
}

function uploadCard() {
  const u = upload();
  const all = [...u.files.values()];
  const done = all.filter((f) => ["staged", "refused", "failed"].includes(f.state));
  const refused = [...u.files.entries()].filter(([, f]) => f.state === "refused" || f.state === "failed");
  const bytes = all.reduce((s, f) => s + (f.size || 0), 0);
  const sent = done.reduce((s, f) => s + (f.size || 0), 0);
  const staged = u.staged ? u.staged.size : 0;
  const input = h("input", { type: "file", multiple: true, class: "lcl-hidden", "aria-label": "Choose images",
                             onchange: (e) => addFiles([...e.target.files].map((file) => ({ file, path: file.name }))) });
  const folder = h("input", { type: "file", multiple: true, webkitdirectory: true, class: "lcl-hidden",
                              "aria-label": "Choose a folder",
                              onchange: (e) => addFiles([...e.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }))) });
  const zone = h("div", {
    class: "lcl-drop", "data-drop": "",
    // ours alone: ComfyUI's own drop handler would try to open the files as workflows
    ondragover: (e) => { e.preventDefault(); e.stopPropagation(); e.currentTarget.classList.add("lcl-drop-on"); },
    ondragleave: (e) => e.currentTarget.classList.remove("lcl-drop-on"),
    ondrop: async (e) => {
      e.preventDefault();
      e.stopPropagation();
      e.currentTarget.classList.remove("lcl-drop-on");
      addFiles(await droppedFiles(e.dataTransfer));
    },
  }, "Drop a folder or images here, or ",
  // the pickers on the page (patch() keeps them), not the ones this paint built
  h("button", { class: "lcl-link lcl-inline", onclick: (e) => e.currentTarget.parentElement.querySelector('[aria-label="Choose images"]').click() },
    "choose files"), " / ",
  h("button", { class: "lcl-link lcl-inline", onclick: (e) => e.currentTarget.parentElement.querySelector('[aria-label="Choose a folder"]').click() },
    "a folder"), input, folder);
  return h("div", { class: "lcl-card", "data-upload": "" },
    h("div", { class: "lcl-actions" },
      h("input", { class: "lcl-input lcl-wide", placeholder: "new dataset name", value: u.name,
                   "aria-label": "New dataset name",
                   oninput: (e) => { u.name = e.target.value; }, onchange: lookUpStaged })),
    zone,
    all.length ? h("div", { class: "lcl-bar" }, h("div", { class: "lcl-fill lcl-ok",
      style: `width:${(100 * (bytes ? sent / bytes : 0)).toFixed(1)}%` })) : null,
    all.length || staged ? h("div", { class: "lcl-meta", "data-upload-progress": "" },
      all.length ? `${done.length}/${all.length} files · ${size(sent)} of ${size(bytes)}` : "",
      staged ? ` · ${staged} staged for ${u.name.trim()}` : "",
      all.some((f) => f.resumed) ? ` · ${all.filter((f) => f.resumed).length} already there (resumed)` : "") : null,
    refused.length ? h("ul", { class: "lcl-refused", "data-refused": refused.length },
      refused.map(([n, f]) => h("li", { "data-file": n }, `${n}: ${f.reason}`))) : null,
    staged && !u.running ? h("div", { class: "lcl-actions" },
      select("Save mode", u.mode, [["create", "new dataset"], ["merge", "add to it"], ["replace", "replace it"]],
        (v) => { u.mode = v; }),
      dangerButton("publish-upload", "Save as dataset", "Save now?", async () => {
        const result = await publishOrAskToForce(u.name.trim(), { mode: u.mode });
        library.upload = null;
        library.review = null;
        await library.load();
        return result;
      }, (r) => `Dataset ${r.dataset} ${r.result}: ${r.report.count} images`
        + (r.report.errors.length ? `, ${r.report.errors.length} problem(s)` : "")),
      button("open-prepare", "Prepare…", () => openPrepare(u.name.trim())),
      dangerButton("discard-upload", "Discard", "Discard staged?", async () => {
        await lc.discardUpload(u.name.trim());
        library.upload = null;
        library.review = null;
      })) : null);
}

// ---- the preparation pipeline (large view) -------------------------------------------------------
// A review in progress for this upload is resumed where it was left (closing the dialog keeps it).
function openPrepare(name) {
  const r = library.review;
  if (r && r.name === name && r.step !== "saved") {
    openDialog("prepare", `Prepare “${name}”`, prepareView);
    return;
  }
  library.review = { name, step: "options", options: { lora_type: "character", caption: "none", trigger: "", resolution: 1024 },
                   items: [], decisions: {}, report: null, mode: "create", result: null };
  openDialog("prepare", `Prepare “${name}”`, prepareView);
}

async function runPrepare() {
  const r = library.review;
  if (r.step === "running") return;
  r.step = "running";
  library.changed();
  try {
    const body = { ...r.options, resolution: Number(r.options.resolution) };
    if (!body.trigger) delete body.trigger;
    const review = await lc.prepareUpload(r.name, body);
    Object.assign(r, { step: "review", items: review.items, report: review.report, skipped: review.skipped,
                       duplicates: review.duplicates, decisions: {} });
  } catch (err) {
    r.step = "options";
    toast("error", "LoRA Cloud", err.message);
  }
  library.changed();
}

function reportBox(report) {
  if (!report) return null;
  return h("div", { class: `lcl-report${report.ok ? "" : " lcl-report-bad"}`, "data-report": report.ok ? "ok" : "errors" },
    h("strong", null, report.ok ? `Valid: ${report.count} images` : `${report.errors.length} problem(s) in ${report.count} images`),
    Object.keys(report.buckets || {}).length
      ? h("div", { class: "lcl-meta" }, "buckets: " + Object.entries(report.buckets).map(([k, v]) => `${k} ×${v}`).join(", "))
      : null,
    (report.errors || []).map((e) => h("div", { class: "lcl-error" }, e)),
    (report.warnings || []).map((w) => h("div", { class: "lcl-warning" }, w)));
}

// The crop's frame over the original, in percent of the original's size, known once it has loaded
// (kept per URL, so every later paint draws the frame where the first load put it).
const naturalSizes = new Map(); // image URL -> [width, height]

function frameStyle(box, src) {
  const known = naturalSizes.get(src);
  if (!box || !known) return null;
  const [x0, y0, x1, y1] = box;
  const [w, hgt] = known;
  return `left:${(100 * x0 / w).toFixed(2)}%;top:${(100 * y0 / hgt).toFixed(2)}%;`
    + `width:${(100 * (x1 - x0) / w).toFixed(2)}%;height:${(100 * (y1 - y0) / hgt).toFixed(2)}%`;
}

function cropFigure(name, item) {
  const box = item.crop_box;
  const src = lc.uploadImageUrl(name, "files", item.source);
  const place = (img) => {
    if (!img.naturalWidth) return;
    naturalSizes.set(src, [img.naturalWidth, img.naturalHeight]);
    const style = frameStyle(box, src);
    if (style) img.nextSibling.setAttribute("style", style);
  };
  const original = h("img", { src, alt: `${item.source} (original)`, loading: "lazy", onload: (e) => place(e.currentTarget) });
  const frame = h("div", { class: "lcl-crop-frame", "data-crop": box ? box.join(",") : "", style: frameStyle(box, src) });
  return h("div", { class: "lcl-crop", title: "the original; the frame is the crop" }, original, frame);
}

function reviewItem(name, item) {
  const r = library.review;
  const d = r.decisions[item.image] || {};
  const keep = d.keep !== false;
  return h("figure", { class: `lcl-review${keep ? "" : " lcl-dropped"}`, "data-review": item.image },
    h("div", { class: "lcl-review-images" },
      h("img", { src: lc.uploadImageUrl(name, "prepared", item.image), alt: `${item.image} (prepared)`, loading: "lazy" }),
      cropFigure(name, item)),
    h("label", { class: "lcl-meta" },
      h("input", { type: "checkbox", checked: keep, "aria-label": `Keep ${item.image}`,
                   onchange: (e) => { r.decisions[item.image] = { ...(r.decisions[item.image] || {}), keep: e.target.checked }; library.changed(); } }),
      ` keep · ${item.width}×${item.height}` + (item.bucket ? ` → ${item.bucket.join("×")}` : "")
        + (item.crop_method ? ` · ${item.crop_method}` : "")),
    h("textarea", { class: "lcl-textarea", rows: 3, "aria-label": `Caption of ${item.image}`,
                    value: d.caption ?? item.caption ?? "",
                    oninput: (e) => { r.decisions[item.image] = { ...(r.decisions[item.image] || {}), caption: e.target.value }; } }));
}

function prepareView() {
  const r = library.review;
  if (!r) return [empty("Nothing to prepare.")];
  const o = r.options;
  const steps = ["1 type", "2 auto-caption", "3 review", "4 save"];
  const at = { options: 0, running: 1, review: 2, saved: 3 }[r.step];
  const out = [h("div", { class: "lcl-steps" }, steps.map((s, i) => h("span", { class: i <= at ? "lcl-step-on" : "" }, s)))];
  if (r.step === "options" || r.step === "running") {
    out.push(h("div", { class: "lcl-form" },
      h("label", null, "LoRA type ", select("LoRA type to prepare for", o.lora_type, ["character", "style", "concept"],
        (v) => { o.lora_type = v; })),
      h("label", null, "Auto-caption ", select("Caption model", o.caption,
        [["none", "none (trigger word only)"], ["florence", "Florence-2"], ["blip2", "BLIP-2"]], (v) => { o.caption = v; })),
      h("label", null, "Trigger word ", h("input", { class: "lcl-input", value: o.trigger, "aria-label": "Trigger word",
                                                     oninput: (e) => { o.trigger = e.target.value; } })),
      h("label", null, "Resolution ", select("Resolution", String(o.resolution), ["512", "768", "1024"],
        (v) => { o.resolution = Number(v); })),
      h("button", { class: "lcl-btn", "data-action": "run-prepare",
                    "aria-disabled": r.step === "running" ? "true" : null, onclick: runPrepare },
        r.step === "running" ? "Preparing… (crop, bucket, caption)" : "Prepare")));
    return out;
  }
  if (r.step === "saved") {
    out.push(h("div", { "data-saved": r.result.dataset }, `Dataset ${r.result.dataset} ${r.result.result}.`),
      reportBox(r.result.report),
      h("button", { class: "lcl-btn", onclick: closeDialog }, "Close"));
    return out;
  }
  const kept = r.items.filter((i) => (r.decisions[i.image] || {}).keep !== false).length;
  out.push(reportBox(r.report),
    (r.skipped || []).length ? h("div", { class: "lcl-warning" }, r.skipped.map((s) => h("div", null, `skipped ${s.source}: ${s.error}`))) : null,
    h("div", { class: "lcl-review-grid" }, r.items.map((item) => reviewItem(r.name, item))),
    h("div", { class: "lcl-actions" },
      `${kept} of ${r.items.length} kept · `,
      select("Save mode", r.mode, [["create", "new dataset"], ["merge", "add to it"], ["replace", "replace it"]],
        (v) => { r.mode = v; }),
      button("save-review", "Save dataset", async () => {
        const result = await publishOrAskToForce(r.name, { mode: r.mode, prepared: true, decisions: r.decisions });
        Object.assign(r, { step: "saved", result });
        library.upload = null;
        await library.load();
        return result;
      }, (res) => `Dataset ${res.dataset} ${res.result}`),
      button("back-prepare", "Prepare again", () => { r.step = "options"; })));
  return out;
}

// ---- datasets in the bucket: captions edited in place, over their generation, with undo ---------
async function toggleDataset(name) {
  if (state.openDataset === name) return state.set({ openDataset: null });
  state.set({ openDataset: name });
  try {
    await library.loadEditor(name);
  } catch (err) {
    toast("error", "LoRA Cloud", err.message);
  }
}

// Focus goes back to the caption once its editor closes (the figure is kept by patch()).
function focusCaption(figure) {
  queueMicrotask(() => { if (figure.isConnected) figure.querySelector("figcaption button")?.focus(); });
}

function captionEditor(name, img, big) {
  const ed = library.editor.get(name);
  if (ed.editing === img.file) {
    const commit = async (from) => {
      const figure = from.closest("figure");
      const text = figure.querySelector("textarea").value; // the field on the page, as typed
      await act(`caption:${name}:${img.file}`, () => library.saveCaption(name, img.file, text));
      focusCaption(figure);
    };
    const cancel = (from) => {
      const figure = from.closest("figure");
      ed.editing = null;
      library.changed();
      focusCaption(figure);
    };
    const area = h("textarea", { class: "lcl-textarea", rows: big ? 4 : 3, value: img.caption ?? "",
                                 "aria-label": `Caption of ${img.file}`, "data-autofocus": "",
                                 onkeydown: (e) => {
                                   if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); commit(e.currentTarget); }
                                   if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); cancel(e.currentTarget); }
                                 } });
    return h("div", { class: "lcl-caption-edit" }, area,
      h("div", { class: "lcl-actions" },
        h("button", { class: "lcl-btn", "data-action": "save-caption", onmousedown: (e) => e.preventDefault(),
                      onclick: (e) => commit(e.currentTarget) }, "Save"),
        h("button", { class: "lcl-btn", "data-action": "cancel-caption", onmousedown: (e) => e.preventDefault(),
                      onclick: (e) => cancel(e.currentTarget) }, "Cancel")));
  }
  // a real button inside: Enter and Space open the editor as a click does
  return h("figcaption", { class: "lcl-caption" },
    h("button", { class: "lcl-caption-btn lcl-editable", title: "click to edit", "data-edit-caption": img.file,
                  "aria-label": `Edit the caption of ${img.file}: ${img.caption ?? "no caption"}`,
                  onclick: () => library.editCaption(name, img.file) }, img.caption ?? "(no caption)"));
}

function imageGrid(name, big = false) {
  const ed = library.editor.get(name);
  if (!ed) return empty("…");
  return h("div", { class: big ? "lcl-grid lcl-grid-big" : "lcl-grid" }, ed.images.map((img) =>
    h("figure", { class: "lcl-figure", "data-file": img.file },
      h("img", { src: lc.thumbUrl(name, img.file, big ? 256 : 128), alt: img.file, loading: "lazy" }),
      captionEditor(name, img, big),
      ed.conflict[img.file] ? h("div", { class: "lcl-warning", "data-conflict": img.file }, ed.conflict[img.file]) : null)));
}

function editorActions(name, big) {
  const ed = library.editor.get(name);
  const report = ed?.report;
  return [h("div", { class: "lcl-actions" },
    ed && ed.undo.length ? button(`undo:${name}`, `Undo (${ed.undo.length})`, () => library.undo(name)) : null,
    button(`validate:${name}`, "Validate", () => library.validate(name)),
    big ? null : button(`large:${name}`, "Large view", () => openDialog(`dataset:${name}`, `Dataset “${name}”`, () => [
      ...editorActions(name, true), imageGrid(name, true)])),
    big ? null : dangerButton(`delete-dataset:${name}`, "Delete dataset", "Really delete?",
      () => library.deleteDataset(name), "Dataset deleted")),
  report ? reportBox(report) : null];
}

function datasetCard(ds) {
  const open = state.openDataset === ds.name;
  return h("div", { class: "lcl-card", "data-dataset": ds.name },
    h("div", { class: "lcl-row" },
      h("button", { class: "lcl-link", onclick: () => toggleDataset(ds.name) }, `${open ? "▾" : "▸"} ${ds.name}`),
      h("span", { class: "lcl-meta" }, `${ds.images} images · ${ds.captioned} captioned`
        + (ds.trigger ? ` · trigger ${ds.trigger}` : "")
        + (ds.complete === false ? " · incomplete: its upload did not finish" : ""))),
    open ? imageGrid(ds.name) : null,
    open ? editorActions(ds.name, false) : null);
}

function render() {
  return [
    section("Upload", "upload", uploadCard()),
    section("Datasets", "datasets", library.datasets.length ? library.datasets.map(datasetCard) : empty("No datasets."),
      moreButton("datasets", library.datasets.length, library.totals.datasets, () => library.more("datasets"))),
  ];
}

export const datasetsSection = { id: "datasets", title: "Datasets", render,
  stores: ["library"] };
