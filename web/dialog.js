// LoRA Cloud: the large view, a dialog over ComfyUI for the work that needs room (editing a
// dataset, reviewing a preparation, comparing runs). One at a time; what it shows lives in the
// state singleton, so it is rebuilt like the sidebar. No side effects at import.
import { loraCloudState as state } from "./state.js";
import { h } from "./ui.js";

const back = h("div", {
  class: "lcl-dialog-back", "data-lcl-dialog": "",
  onmousedown: (e) => { if (e.target === back) closeDialog(); },
  onkeydown: (e) => { if (e.key === "Escape") closeDialog(); },
});

// Show `render()` (-> [Node]) under `title`; `id` names it for tests and for reopening.
export function openDialog(id, title, render) {
  state.dialog = { id, title, render };
  state.changed();
}

export function closeDialog() {
  state.dialog = null;
  state.changed();
}

export function dialogElement() {
  return back;
}

export function paintDialog() {
  const d = state.dialog;
  if (!d) {
    back.remove();
    return;
  }
  const box = back.querySelector(".lcl-dialog");
  const scroll = box ? box.scrollTop : 0;
  let body;
  try {
    body = d.render();
  } catch (err) {
    body = [h("div", { class: "lcl-error" }, err.message)];
  }
  back.replaceChildren(h("div", { class: "lcl-dialog", role: "dialog", "aria-label": d.title, "data-dialog": d.id },
    h("div", { class: "lcl-header" }, h("span", null, d.title),
      h("button", { class: "lcl-btn", "data-action": "close-dialog", title: "Close", onclick: closeDialog }, "✕")),
    h("div", { class: "lcl-dialog-body" }, body)));
  if (!back.isConnected) document.body.append(back);
  back.querySelector(".lcl-dialog").scrollTop = scroll;
}

export const dialogCss = `
.lcl-dialog-back{position:fixed;inset:0;background:rgba(0,0,0,.55);z-index:10000;display:flex;align-items:center;justify-content:center}
.lcl-dialog{background:var(--comfy-menu-bg,#222);color:var(--fg-color,#ddd);border:1px solid var(--border-color,#555);border-radius:8px;width:min(1100px,94vw);max-height:90vh;overflow:auto;padding:.75rem 1rem;font-size:13px;box-sizing:border-box}
.lcl-dialog-body{display:flex;flex-direction:column;gap:.6rem;margin-top:.5rem}
`;
