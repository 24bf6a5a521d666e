// Test stand-in for ComfyUI's /scripts/api.js: the members the sidebar uses, behaving as
// ComfyUI frontend 1.27 does:
// - fetchApi(route, init) requests "/api" + route with cache "no-cache" (headers are the caller's);
// - apiURL(route) = api_base + "/api" + route; fileURL(route) = api_base + route;
// - a websocket on /ws delivers {"type", "data"} messages; a custom type reaches listeners only
//   when some extension called addEventListener for it, else "Unknown message type" is logged.
class ComfyApi extends EventTarget {
  constructor() {
    super();
    this.api_base = "";
    this.clientId = null;
    this.registered = new Set();
    this.socket = null;
  }

  apiURL(route) {
    return this.api_base + "/api" + route;
  }

  fileURL(route) {
    return this.api_base + route;
  }

  fetchApi(route, options) {
    options = options || {};
    options.headers = options.headers || {};
    options.cache = "no-cache";
    return fetch(this.apiURL(route), options);
  }

  addEventListener(type, callback, options) {
    super.addEventListener(type, callback, options);
    this.registered.add(type);
  }

  init() {
    return new Promise((resolve) => {
      const url = `ws://${location.host}${this.api_base}/ws`;
      this.socket = new WebSocket(url);
      this.socket.addEventListener("open", () => resolve());
      this.socket.addEventListener("message", (event) => {
        const msg = JSON.parse(event.data);
        if (msg.type === "status") {
          this.clientId = msg.data.sid;
          this.dispatchEvent(new CustomEvent("status", { detail: msg.data }));
        } else if (this.registered.has(msg.type)) {
          this.dispatchEvent(new CustomEvent(msg.type, { detail: msg.data }));
        } else {
          console.warn("Unknown message type", msg.type);
        }
      });
    });
  }
}

export const api = new ComfyApi();
