// Test stand-in for ComfyUI's /scripts/app.js: registerExtension, and the extensionManager
// members the sidebar uses (registerSidebarTab, toast.add, command.execute), behaving as
// frontend 1.27 does: render(el) gets a fresh element each
// time the tab is shown; switching to another tab drops the element without calling destroy;
// closing the tab calls destroy. Tab buttons carry "<id>-tab-button" (1.27) and aria-label.
import { api } from "./api.js";

const extensions = [];
const tabs = new Map();
let openTab = null;

export const toasts = [];
export const commands = [];

function showTab(id) {
  const panel = document.getElementById("sidebar-panel");
  const previous = openTab && tabs.get(openTab);
  panel.replaceChildren();
  if (openTab === id) {
    previous?.destroy?.();
    openTab = null;
    return;
  }
  openTab = id;
  const el = document.createElement("div");
  el.className = "sidebar-content";
  panel.append(el);
  tabs.get(id).render(el);
}

function addButton(tab) {
  const button = document.createElement("button");
  button.className = `side-bar-button ${tab.id}-tab-button`;
  button.setAttribute("aria-label", tab.tooltip || tab.title);
  const icon = document.createElement("i");
  icon.className = typeof tab.icon === "string" ? tab.icon : "";
  const badge = document.createElement("span");
  badge.className = "badge";
  button.append(icon, document.createTextNode(tab.title), badge);
  button.addEventListener("click", () => showTab(tab.id));
  document.getElementById("sidebar-buttons").append(button);
  // the real frontend re-evaluates iconBadge reactively; polling is the shim's stand-in
  setInterval(() => {
    const value = typeof tab.iconBadge === "function" ? tab.iconBadge() : tab.iconBadge;
    badge.textContent = value ?? "";
  }, 200);
}

export const app = {
  extensionManager: {
    registerSidebarTab(tab) {
      if (tabs.has(tab.id)) throw new Error(`sidebar tab ${tab.id} is already registered`);
      tabs.set(tab.id, tab);
      addButton(tab);
    },
    toast: {
      add(message) {
        toasts.push(message);
        const el = document.createElement("div");
        el.className = `toast toast-${message.severity}`;
        el.textContent = `${message.summary}: ${message.detail ?? ""}`;
        document.getElementById("toasts").append(el);
      },
    },
    command: {
      async execute(id) {
        commands.push(id);
        const prefix = "Workspace.ToggleSidebarTab.";
        if (id.startsWith(prefix)) showTab(id.slice(prefix.length));
      },
    },
  },
  registerExtension(extension) {
    extensions.push(extension);
  },
  // what the canvas loads (the template loader): recorded for the test
  async loadGraphData(workflow) {
    window.__loadedGraph = workflow;
  },
};

// What the frontend does at start: open the socket, import every extension module listed by
// /api/extensions, then run each extension's setup().
export async function start() {
  await api.init();
  const urls = await (await api.fetchApi("/extensions")).json();
  for (const url of urls) await import(api.fileURL(url));
  for (const extension of extensions) await extension.setup?.(app);
  window.__shimReady = true;
}
