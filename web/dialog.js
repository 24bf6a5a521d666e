// LoRA Cloud: the large view, a modal dialog over ComfyUI for the work that needs room (editing a
// dataset, reviewing a preparation, comparing runs). One at a time; what it shows lives in the
// stores and the view state, so it is painted like the sidebar (patched, focus kept).
// Modal as a dialog should be: focus moves in when it opens, Tab stays inside, Escape closes it
// from anywhere, focus returns to what opened it. Closing discards nothing: work in it (a
// preparation review) stays in its store, and opening it again resumes it. No side effects at import.
import { patch } from "./patch.js";
import { loraCloudState as state } from "./state.js";
import { h } from "./ui.js";

const back = h("div", {
  class: "lcl-dialog-back", "data-lcl-dialog": "",
  onmousedown: (e) => { if (e.target === back) closeDialog(); },
});

const FOCUSABLE = "button:not([disabled]), [href], input:not([disabled]):not([type=hidden]), select:not([disabled]),"
  + " textarea:not([disabled]), [tabindex]:not([tabindex='-1'])";

function focusables() {
  return [...back.querySelectorAll(FOCUSABLE)].filter((el) => el.offsetParent !== null || el === document.activeElement);
}

// Escape closes the dialog wherever focus is; Tab and Shift+Tab go round inside it.
function onKey(event) {
  if (!state.dialog) return;
  if (event.key === "Escape") {
    event.preventDefault();
    closeDialog();
    return;
  }
  if (event.key !== "Tab") return;
  const list = focusables();
  if (!list.length) return;
  const first = list[0];
  const last = list[list.length - 1];
  const inside = back.contains(document.activeElement);
  if (!inside || (event.shiftKey && document.activeElement === first) || (!event.shiftKey && document.activeElement === last)) {
    event.preventDefault();
    (event.shiftKey ? last : first).focus();
  }
}

let listening = false;

// Show `render()` (-> [Node]) under `title`; `id` names it for tests and for reopening.
export function openDialog(id, title, render) {
  if (!listening) {
    document.addEventListener("keydown", onKey);
    listening = true;
  }
  const active = document.activeElement;
  const opener = state.dialog?.opener ?? (active && active !== document.body && !back.contains(active) ? active : null);
  state.dialog = { id, title, render, opener, openerAction: opener?.getAttribute?.("data-action") };
  paintDialog();
  const box = back.querySelector(".lcl-dialog");
  (focusables().find((el) => el.getAttribute("data-action") !== "close-dialog") || box)?.focus();
  state.changed();
}

export function closeDialog() {
  const d = state.dialog;
  if (!d) return;
  state.dialog = null;
  paintDialog();
  // back to the opener; a repaint may have replaced it: then to what does the same
  let target = d.opener;
  if (!target?.isConnected && d.openerAction) {
    target = document.querySelector(`.lcl-root [data-action="${CSS.escape(d.openerAction)}"]`);
  }
  if (target?.isConnected) target.focus();
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
  let body;
  try {
    body = d.render();
  } catch (err) {
    body = [h("div", { class: "lcl-error" }, err.message)];
  }
  if (!back.isConnected) document.body.append(back);
  patch(back, [h("div", { class: "lcl-dialog", role: "dialog", "aria-modal": "true", "aria-labelledby": "lcl-dialog-title",
                          "data-dialog": d.id, tabindex: "-1" },
    h("div", { class: "lcl-header" }, h("span", { id: "lcl-dialog-title" }, d.title),
      h("button", { class: "lcl-btn", "data-action": "close-dialog", title: "Close", "aria-label": "Close",
                    onclick: closeDialog }, "✕")),
    h("div", { class: "lcl-dialog-body" }, body))]);
}

