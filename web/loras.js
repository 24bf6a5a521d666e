// LoRA Cloud sidebar section "LoRAs": the LoRAs in the bucket; download into ComfyUI, delete.
// No side effects at import.
//
// Hook for other features on a LoRA's card (the LoRA test button): add a function to
// `loraCardExtras`; each gets the LoRA record and returns a Node (or null) for the card's actions.
import { app } from "../../scripts/app.js";
import { stores } from "./live.js";
import { loraTestCard } from "./lora_test.js";
import { loraCloudState as state } from "./state.js";
import { button, dangerButton, empty, h, moreButton, section } from "./ui.js";

const { library } = stores;

export const loraCardExtras = [loraTestCard]; // what made it + Test / Compare strengths (lora_test.js)

function loraCard(lora) {
  return h("div", { class: "lcl-card", "data-lora": lora.name },
    h("div", { class: "lcl-row" },
      h("strong", null, lora.name),
      h("span", { class: "lcl-meta" }, `${(lora.size / 1e6).toFixed(1)} MB${lora.local ? " · in ComfyUI" : ""}`)),
    h("div", { class: "lcl-actions" },
      lora.local ? null : button(`download:${lora.name}`, "Download", async () => {
        await library.downloadLora(lora.name);
        try {
          await app.extensionManager.command.execute("Comfy.RefreshNodeDefinitions");
        } catch (err) {
          console.warn("LoRA Cloud: could not refresh node definitions", err);
        }
      }, `${lora.name} is in models/loras/lora_cloud`),
      dangerButton(`delete-lora:${lora.name}`, "Delete", "Really delete?",
        () => library.deleteLora(lora.name), "LoRA deleted from the bucket"),
      loraCardExtras.map((extra) => extra(lora))));
}

function render() {
  return [section("LoRAs", "loras", library.loras.length ? library.loras.map(loraCard) : empty("No LoRAs yet."),
    moreButton("loras", library.loras.length, library.totals.loras, () => library.more("loras")))];
}

// the default test prompts are asked for when the section is shown, and for LoRAs listed while it is
export const lorasSection = { id: "loras", title: "LoRAs", render, stores: ["library"],
  load: () => library.loadTestDefaults(),
  setup: () => library.subscribe(() => { if (state.tab === "loras") library.loadTestDefaults(); }) };
