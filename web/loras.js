// LoRA Cloud sidebar section "LoRAs": the LoRAs in the bucket; download into ComfyUI, delete.
// No side effects at import.
//
// Hook for other features on a LoRA's card (the LoRA test button): add a function to
// `loraCardExtras`; each gets the LoRA record and returns a Node (or null) for the card's actions.
import { app } from "../../scripts/app.js";
import { loraCloudApi as lc } from "./api.js";
import { loraTestCard } from "./lora_test.js";
import { moreButton, refresh } from "./data.js";
import { loraCloudState as state } from "./state.js";
import { button, dangerButton, empty, h, section } from "./ui.js";

export const loraCardExtras = [loraTestCard]; // what made it + Test / Compare strengths (lora_test.js)

function loraCard(lora) {
  return h("div", { class: "lcl-card", "data-lora": lora.name },
    h("div", { class: "lcl-row" },
      h("strong", null, lora.name),
      h("span", { class: "lcl-meta" }, `${(lora.size / 1e6).toFixed(1)} MB${lora.local ? " · in ComfyUI" : ""}`)),
    h("div", { class: "lcl-actions" },
      lora.local ? null : button(`download:${lora.name}`, "Download", async () => {
        await lc.downloadLora(lora.name);
        await refresh();
        try {
          await app.extensionManager.command.execute("Comfy.RefreshNodeDefinitions");
        } catch (err) {
          console.warn("LoRA Cloud: could not refresh node definitions", err);
        }
      }, `${lora.name} is in models/loras/lora_cloud`),
      dangerButton(`delete-lora:${lora.name}`, "Delete", "Really delete?",
        () => lc.deleteLora(lora.name).then(refresh), "LoRA deleted from the bucket"),
      loraCardExtras.map((extra) => extra(lora))));
}

function render() {
  return [section("LoRAs", "loras", state.loras.length ? state.loras.map(loraCard) : empty("No LoRAs yet."),
    moreButton("loras", state.loras.length))];
}

export const lorasSection = { id: "loras", title: "LoRAs", render };
