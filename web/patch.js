// LoRA Cloud: bring a live element in line with a freshly built one, touching only what differs.
// Sections build their view from the stores (cheap, no fetching); patch() keeps every node that
// is still there (children matched by their id attribute, else by position and tag), so the
// element with focus, its caret and a half-typed value stay as they are while live events arrive.
// Handlers made by ui.js's h() live on the node (`__lcl`), so a kept node takes the new ones.
// No side effects at import.

// The attributes that name what an element shows (a run, a file...): children are matched by them.
const KEYS = ["data-key", "data-run", "data-run-row", "data-instance", "data-dataset", "data-lora", "data-file",
              "data-review", "data-section", "data-dialog", "data-session", "data-tab", "data-action"];

function keyOf(node) {
  if (node.nodeType !== 1) return null;
  for (const k of KEYS) {
    const v = node.getAttribute(k);
    if (v != null) return `${node.tagName}|${k}=${v}`;
  }
  return null;
}

function sameKind(a, b) {
  if (a.nodeType !== b.nodeType) return false;
  if (a.nodeType !== 1) return true;
  return a.tagName === b.tagName && (a.tagName !== "INPUT" || a.type === b.type);
}

// The form values h() set: written to a kept control only when the view's value changed, and never
// into the control being typed in.
function syncValue(old, fresh) {
  if (!("__lclValue" in fresh)) return;
  const changed = old.__lclValue !== fresh.__lclValue;
  old.__lclValue = fresh.__lclValue;
  if (changed && old.ownerDocument.activeElement !== old) old.value = fresh.__lclValue;
}

function morph(old, fresh, inserted) {
  if (old.nodeType !== 1) {
    if (old.data !== fresh.data) old.data = fresh.data;
    return;
  }
  for (const { name, value } of [...fresh.attributes]) {
    if (old.getAttribute(name) !== value) {
      old.setAttribute(name, value);
      if (name === "checked") old.checked = true;
    }
  }
  for (const { name } of [...old.attributes]) {
    if (fresh.hasAttribute(name)) continue;
    if (name === "open" && old.tagName === "DETAILS") continue; // the user opened it
    old.removeAttribute(name);
    if (name === "checked") old.checked = false;
  }
  old.__lcl = fresh.__lcl;
  for (const type of Object.keys(fresh.__lcl || {})) old.addEventListener(type, dispatch);
  patchChildren(old, [...fresh.childNodes], inserted);
  if (old.tagName === "SELECT" || old.tagName === "INPUT" || old.tagName === "TEXTAREA") syncValue(old, fresh);
}

function patchChildren(parent, fresh, inserted) {
  const old = [...parent.childNodes];
  const byKey = new Map();
  for (const o of old) {
    const k = keyOf(o);
    if (k != null && !byKey.has(k)) byKey.set(k, o);
  }
  const used = new Set();
  let cursor = parent.firstChild;
  for (const n of fresh) {
    const k = keyOf(n);
    let match = null;
    if (k != null) {
      const o = byKey.get(k);
      if (o && !used.has(o) && sameKind(o, n)) match = o;
    } else {
      for (let o = cursor; o; o = o.nextSibling) {
        if (!used.has(o) && keyOf(o) == null && sameKind(o, n)) {
          match = o;
          break;
        }
      }
    }
    if (match) {
      used.add(match);
      morph(match, n, inserted);
    } else {
      match = n;
      inserted.push(n);
    }
    if (match === cursor) cursor = cursor.nextSibling;
    else parent.insertBefore(match, cursor);
  }
  for (const o of old) if (!used.has(o)) o.remove();
}

// Patch `el`'s children to be `children` (Nodes, as a section's render() returns them). A newly
// shown element that asks for focus (data-autofocus: an editor just opened) gets it, unless a
// modal dialog elsewhere holds the focus (the sidebar behind it is painted too).
export function patch(el, children) {
  const inserted = [];
  patchChildren(el, children.flat(Infinity).filter((c) => c != null && c !== false), inserted);
  const modal = el.ownerDocument.querySelector('[aria-modal="true"]');
  for (const node of inserted) {
    if (node.nodeType !== 1) continue;
    const target = node.hasAttribute("data-autofocus") ? node : node.querySelector("[data-autofocus]");
    if (target && target.isConnected && (!modal || modal.contains(target))) {
      target.focus();
      break;
    }
  }
}

// The one listener h() and patch() register for each event type: it calls the node's current handler.
export function dispatch(event) {
  const fn = this.__lcl?.[event.type];
  if (fn) return fn.call(this, event);
}
