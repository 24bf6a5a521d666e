// LoRA Cloud: the names of the live events the server pushes over ComfyUI's websocket, in one
// place. They mirror comfy_lora_cloud/service/events.py (a Python test holds the two equal).
// No side effects at import: ComfyUI imports every .js file in this folder as a module.
export const EVENTS = Object.freeze({
  run: "lora_cloud.run", // one run's view whenever it changes
  instance: "lora_cloud.instance", // {instances: [...]} when instances change
  budget: "lora_cloud.budget", // {kind, message}: warning, exceeded, changed, enforced, enforce_failed
  guard: "lora_cloud.guard", // {kind: "problem", message}
  session: "lora_cloud.session", // {kind, id, session}: a remote ComfyUI session started, ready, ended
  preemption: "lora_cloud.preemption", // {kind, run_id, instance_id, message}
  notify: "lora_cloud.notify", // {id, kind, title, message, severity}: a notice's toast
});
