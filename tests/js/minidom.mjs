// A small DOM for testing web/patch.js under Node: elements with attributes, children, focus and
// the form properties patch() reads and writes. Only what patch() uses; no layout, no events.

export class FakeDocument {
  constructor() {
    this.activeElement = null;
    this.body = new FakeElement(this, "BODY");
    this.body.connected = true;
  }

  element(tag, attrs = {}, ...children) {
    const el = new FakeElement(this, tag.toUpperCase());
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "value") {
        el.value = v;
        el.__lclValue = v;
      } else {
        el.setAttribute(k, v);
        if (k === "checked") el.checked = true; // a new checkbox starts as its attribute says
      }
    }
    for (const c of children) el.append(typeof c === "string" ? new FakeText(this, c) : c);
    return el;
  }

  querySelector(selector) {
    return this.body.querySelector(selector);
  }
}

class FakeNode {
  constructor(doc) {
    this.ownerDocument = doc;
    this.parentNode = null;
  }

  get nextSibling() {
    if (!this.parentNode) return null;
    const kids = this.parentNode.childNodes;
    return kids[kids.indexOf(this) + 1] ?? null;
  }

  get isConnected() {
    let n = this;
    while (n.parentNode) n = n.parentNode;
    return n === this.ownerDocument.body;
  }

  remove() {
    if (!this.parentNode) return;
    const kids = this.parentNode.childNodes;
    kids.splice(kids.indexOf(this), 1);
    if (this.ownerDocument.activeElement && (this.ownerDocument.activeElement === this || this.contains?.(this.ownerDocument.activeElement))) {
      this.ownerDocument.activeElement = this.ownerDocument.body; // what a browser does to focus in a removed node
    }
    this.parentNode = null;
  }
}

export class FakeText extends FakeNode {
  constructor(doc, data) {
    super(doc);
    this.nodeType = 3;
    this.data = data;
  }
}

export class FakeElement extends FakeNode {
  constructor(doc, tagName) {
    super(doc);
    this.nodeType = 1;
    this.tagName = tagName;
    this.attrs = new Map();
    this.childNodes = [];
    this.listeners = [];
    this.checked = false;
    this.value = "";
    this.writes = 0; // how often patch() set this element's value
  }

  get type() {
    return this.getAttribute("type") || "text";
  }

  get attributes() {
    return [...this.attrs].map(([name, value]) => ({ name, value }));
  }

  getAttribute(name) {
    return this.attrs.has(name) ? this.attrs.get(name) : null;
  }

  hasAttribute(name) {
    return this.attrs.has(name);
  }

  setAttribute(name, value) {
    this.attrs.set(name, String(value));
  }

  removeAttribute(name) {
    this.attrs.delete(name);
  }

  addEventListener(type, fn) {
    if (!this.listeners.some((l) => l.type === type && l.fn === fn)) this.listeners.push({ type, fn });
  }

  get firstChild() {
    return this.childNodes[0] ?? null;
  }

  append(child) {
    this.insertBefore(child, null);
  }

  insertBefore(child, ref) {
    const focused = this.ownerDocument.activeElement;
    child.remove();
    if (focused && (focused === child || child.contains?.(focused))) this.ownerDocument.activeElement = focused;
    const at = ref ? this.childNodes.indexOf(ref) : this.childNodes.length;
    this.childNodes.splice(at, 0, child);
    child.parentNode = this;
    child.moved = (child.moved || 0) + 1;
    return child;
  }

  contains(node) {
    for (let n = node; n; n = n.parentNode) if (n === this) return true;
    return false;
  }

  focus() {
    this.ownerDocument.activeElement = this;
  }

  // [name] and [name="value"] only
  querySelector(selector) {
    const m = /^\[([\w-]+)(?:="([^"]*)")?\]$/.exec(selector);
    const matches = (el) => el.nodeType === 1 && el.hasAttribute(m[1]) && (m[2] === undefined || el.getAttribute(m[1]) === m[2]);
    const walk = (el) => {
      for (const c of el.childNodes) {
        if (matches(c)) return c;
        const found = c.nodeType === 1 ? walk(c) : null;
        if (found) return found;
      }
      return null;
    };
    return walk(this);
  }

  get text() {
    return this.childNodes.map((c) => (c.nodeType === 3 ? c.data : c.text)).join("");
  }
}
