import { test } from "node:test";
import assert from "node:assert/strict";

import { patch } from "../../web/patch.js";
import { FakeDocument } from "./minidom.mjs";

function mounted() {
  const doc = new FakeDocument();
  const root = doc.element("div");
  doc.body.append(root);
  return { doc, root, el: (...args) => doc.element(...args) };
}

test("kept nodes stay the same objects; only what changed is written", () => {
  const { root, el } = mounted();
  const view = (step) => [el("div", { "data-run": "r1" }, el("span", {}, `step ${step}`), el("img", { src: "s.png" })),
                          el("div", { "data-run": "r2" }, "other")];
  patch(root, view(1));
  const [card, other] = root.childNodes;
  const img = card.childNodes[1];
  patch(root, view(2));
  assert.equal(root.childNodes[0], card);
  assert.equal(root.childNodes[1], other);
  assert.equal(card.childNodes[1], img);
  assert.equal(card.text, "step 2");
});

test("children are matched by their id attribute across a reorder, an insert and a removal", () => {
  const { root, el } = mounted();
  patch(root, ["a", "b", "c"].map((id) => el("div", { "data-run": id }, id)));
  const [a, b, c] = root.childNodes;
  patch(root, ["c", "new", "a"].map((id) => el("div", { "data-run": id }, id)));
  assert.deepEqual(root.childNodes.map((n) => n.getAttribute("data-run")), ["c", "new", "a"]);
  assert.equal(root.childNodes[0], c);
  assert.equal(root.childNodes[2], a);
  assert.ok(!b.isConnected);
});

test("the field being typed in keeps its value; a field the view changed elsewhere is updated", () => {
  const { doc, root, el } = mounted();
  const view = (trigger, steps) => [el("label", {}, el("input", { "aria-label": "Trigger", value: trigger })),
                                    el("label", {}, el("input", { "aria-label": "Steps", value: steps }))];
  patch(root, view("", "100"));
  const [trigger, steps] = root.childNodes.map((l) => l.childNodes[0]);
  trigger.focus();
  trigger.value = "zkc"; // typed, not yet in the model
  patch(root, view("", "200"));
  assert.equal(doc.activeElement, trigger);
  assert.equal(trigger.value, "zkc");
  assert.equal(steps.value, "200");
  steps.value = "250"; // the user's, the view did not change: left alone
  patch(root, view("", "200"));
  assert.equal(steps.value, "250");
});

test("attributes follow the view; a checkbox's checked state when the view's changes; an opened details stays open", () => {
  const { root, el } = mounted();
  const view = (on, cls) => [el("input", { type: "checkbox", "data-key": "keep", ...(on ? { checked: "" } : {}) }),
                             el("button", { class: cls, "data-action": "go" }, "Go"),
                             el("details", {}, el("summary", {}, "more"))];
  patch(root, view(true, "lcl-btn"));
  const [box, button, details] = root.childNodes;
  assert.equal(box.checked, true);
  details.setAttribute("open", "");
  patch(root, view(false, "lcl-btn lcl-armed"));
  assert.equal(box.checked, false);
  assert.equal(button.getAttribute("class"), "lcl-btn lcl-armed");
  assert.ok(details.hasAttribute("open"));
});

test("a kept node takes the handlers of its newer self", () => {
  const { root, el } = mounted();
  const button = (n) => {
    const b = el("button", { "data-action": "save" }, "Save");
    b.__lcl = { click: () => n };
    return b;
  };
  patch(root, [button(1)]);
  const live = root.childNodes[0];
  patch(root, [button(2)]);
  assert.equal(root.childNodes[0], live);
  assert.equal(live.__lcl.click(), 2);
});

test("a newly shown editor that asks for focus gets it, unless a modal dialog elsewhere has it", () => {
  const { doc, root, el } = mounted();
  patch(root, [el("figure", { "data-file": "a.png" }, el("figcaption", {}, "cap"))]);
  patch(root, [el("figure", { "data-file": "a.png" }, el("div", {}, el("textarea", { "data-autofocus": "" })))]);
  assert.equal(doc.activeElement.tagName, "TEXTAREA");

  const modal = el("div", { "aria-modal": "true" }, el("button", {}, "x"));
  doc.body.append(modal);
  modal.childNodes[0].focus();
  patch(root, [el("figure", { "data-file": "b.png" }, el("textarea", { "data-autofocus": "" }))]);
  assert.equal(doc.activeElement, modal.childNodes[0]);
});

test("an element of another tag or input type is replaced, not morphed", () => {
  const { root, el } = mounted();
  patch(root, [el("input", { type: "text" })]);
  const text = root.childNodes[0];
  patch(root, [el("input", { type: "checkbox" })]);
  assert.notEqual(root.childNodes[0], text);
  assert.equal(root.childNodes.length, 1);
});
