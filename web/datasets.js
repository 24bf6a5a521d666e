// LoRA Cloud sidebar section "Datasets": the datasets in the bucket, their images and captions.
// No side effects at import.
import { loraCloudApi as lc } from "./api.js";
import { refresh } from "./data.js";
import { loraCloudState as state } from "./state.js";
import { dangerButton, empty, h, section, toast } from "./ui.js";

async function toggleDataset(name) {
  if (state.openDataset === name) return state.set({ openDataset: null });
  state.set({ openDataset: name });
  try {
    state.datasetImages.set(name, await lc.datasetImages(name));
    state.changed();
  } catch (err) {
    toast("error", "LoRA Cloud", err.message);
  }
}

function datasetCard(ds) {
  const open = state.openDataset === ds.name;
  const images = open ? state.datasetImages.get(ds.name) : null;
  return h("div", { class: "lcl-card", "data-dataset": ds.name },
    h("div", { class: "lcl-row" },
      h("button", { class: "lcl-link", onclick: () => toggleDataset(ds.name) }, `${open ? "▾" : "▸"} ${ds.name}`),
      h("span", { class: "lcl-meta" }, `${ds.images} images · ${ds.captioned} captioned`
        + (ds.complete === false ? " · incomplete: its upload did not finish" : ""))),
    open && images ? h("div", { class: "lcl-grid" }, images.map((img) =>
      h("figure", { class: "lcl-figure" },
        h("img", { src: lc.thumbUrl(ds.name, img.file), alt: img.file, loading: "lazy" }),
        h("figcaption", { class: "lcl-caption" }, img.caption ?? "(no caption)")))) : null,
    open ? h("div", { class: "lcl-actions" },
      dangerButton(`delete-dataset:${ds.name}`, "Delete dataset", "Really delete?",
        () => lc.deleteDataset(ds.name).then(refresh), "Dataset deleted")) : null);
}

function render() {
  return [section("Datasets", "datasets", state.datasets.length ? state.datasets.map(datasetCard) : empty("No datasets."))];
}

export const datasetsSection = { id: "datasets", title: "Datasets", render };
