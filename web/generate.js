// LoRA Cloud sidebar section "Generate": remote ComfyUI sessions and the gallery (issue 11 fills
// it in). No side effects at import.
import { empty, h, section } from "./ui.js";

function render() {
  return [section("Generate", "generate",
    empty("Generate images with your LoRAs on a rented GPU: coming with remote sessions."),
    h("div", { class: "lcl-meta" }, "Until then, download a LoRA (LoRAs tab) and use it in this ComfyUI."))];
}

export const generateSection = { id: "generate", title: "Generate", render };
