// LoRA Cloud: the small DOM helpers every section uses. No side effects at import (ComfyUI
// imports every .js file in this folder as a module).
//
// Text that comes from the bucket (names, captions, errors) only ever goes in as text nodes:
// h() appends strings with document.createTextNode and sets attributes with setAttribute;
// nothing here (or in any section) assigns innerHTML.
import { app } from "../../scripts/app.js";
import { dispatch } from "./patch.js";
import { loraCloudState as state } from "./state.js";

export { duration, money, size, when } from "./format.js";

export const SVG_NS = "http://www.w3.org/2000/svg";

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) {
      // kept on the node, so patch() can hand a kept node the handlers of its newer self
      (el.__lcl ||= {})[key.slice(2)] = value;
      el.addEventListener(key.slice(2), dispatch);
    } else if (key === "value" && (tag === "input" || tag === "textarea")) {
      el.value = value;
      el.__lclValue = String(value);
    }
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function svg(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  return el;
}

export function toast(severity, summary, detail) {
  try {
    app.extensionManager.toast.add({ severity, summary, detail, life: severity === "error" ? 8000 : 4000 });
  } catch (err) {
    console.warn("LoRA Cloud:", summary, detail, err);
  }
}

// Run an action once at a time per key, show failures as toasts, then repaint. A button in flight
// says so with aria-disabled, not `disabled`: a disabled button drops the focus to the page body.
export async function act(key, fn, done) {
  if (state.busy.has(key)) return;
  state.busy.add(key);
  state.changed();
  try {
    const result = await fn();
    if (done) toast("success", "LoRA Cloud", typeof done === "function" ? done(result) : done);
    return result;
  } catch (err) {
    toast("error", "LoRA Cloud", err.message);
  } finally {
    state.busy.delete(key);
    state.changed();
  }
}

// A button that wants a second click within a few seconds before it spends, destroys or deletes.
const disarm = new Map(); // key -> its timer
export function dangerButton(key, label, confirmLabel, fn, done) {
  const isArmed = state.armed.has(key);
  return h("button", {
    class: `lcl-btn lcl-danger${isArmed ? " lcl-armed" : ""}`,
    "data-action": key,
    "aria-disabled": state.busy.has(key) ? "true" : null,
    onclick: () => {
      if (state.busy.has(key)) return;
      if (!state.armed.has(key)) {
        state.armed.add(key);
        disarm.set(key, setTimeout(() => { state.armed.delete(key); disarm.delete(key); state.changed(); }, 4000));
        state.changed();
        return;
      }
      clearTimeout(disarm.get(key));
      disarm.delete(key);
      state.armed.delete(key);
      act(key, fn, done);
    },
  }, isArmed ? confirmLabel : label);
}

export function button(key, label, fn, done, extra = {}) {
  return h("button", { class: "lcl-btn", "data-action": key, "aria-disabled": state.busy.has(key) ? "true" : null,
                       onclick: (e) => act(key, () => fn(e), done), ...extra }, label);
}

export function section(title, key, ...body) {
  return h("section", { class: "lcl-section", "data-section": key }, h("h3", null, title), ...body);
}

export function empty(text) {
  return h("div", { class: "lcl-empty" }, text);
}

export function select(label, value, options, onchange, extra = {}) {
  const el = h("select", { class: "lcl-input", "aria-label": label, onchange: (e) => onchange(e.target.value), ...extra },
    options.map((o) => {
      const [v, text] = Array.isArray(o) ? o : [o, o];
      return h("option", { value: v, selected: v === value }, text);
    }));
  el.__lclValue = el.value; // patch() sets a kept select to the value the view shows
  return el;
}

// A line chart of one or more [[x, y], ...] series; each series gets its own colour class.
export function lineChart(seriesList, { width = 240, height = 56, label = "loss by step", cls = "lcl-loss" } = {}) {
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: cls, role: "img", "aria-label": label });
  const all = seriesList.flatMap((s) => s.points);
  if (all.length < 2) return chart;
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const x = (v) => ((v - x0) / (x1 - x0 || 1)) * (width - 4) + 2;
  const y = (v) => height - 2 - ((v - y0) / (y1 - y0 || 1)) * (height - 4);
  seriesList.forEach((s, i) => {
    if (s.points.length < 2) return;
    const line = svg("polyline", {
      points: s.points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(" "),
      fill: "none", stroke: "currentColor", "stroke-width": "1.5", class: `lcl-series lcl-series-${i}`,
    });
    if (s.name) line.setAttribute("data-series", s.name);
    chart.append(line);
  });
  return chart;
}

// "Show more" under a long listing (datasets, loras): asks the store for the next page.
export function moreButton(key, shown, total, more) {
  if (shown >= (total || 0)) return null;
  return button(`more:${key}`, `Show more (${shown} of ${total})`, more);
}
