// LoRA Cloud sidebar: placeholder registration; the full sidebar lands with the ComfyUI issue.
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "LoraCloud.Sidebar",
});
