// Test doubles for the sidebar's modules under Node: a transport that answers like the pack's
// routes (recording each request), and an event source like ComfyUI's api.

// `routes`: {"GET /runs": body | (init, path) => body | {status, body}}; paths without the prefix,
// the query string included when a route names one.
export function fakeTransport(routes) {
  const requests = [];
  return {
    requests,
    apiURL: (path) => `/api${path}`,
    async fetchApi(path, init) {
      const route = path.replace(/^\/lora_cloud\/api/, "");
      requests.push({ method: init.method, path: route, headers: { ...init.headers }, body: init.body });
      let answer = routes[`${init.method} ${route}`] ?? routes[`${init.method} ${route.split("?")[0]}`];
      if (typeof answer === "function") answer = answer(init, route);
      if (answer === undefined) answer = { status: 404, body: { error: "NotFound", message: `no route ${route}` } };
      const { status = 200, body } = answer && answer.status ? answer : { body: answer };
      return { ok: status < 400, status, json: async () => (body === undefined ? null : structuredClone(body)) };
    },
  };
}

export class FakeSource extends EventTarget {
  send(name, detail) {
    const event = new Event(name);
    event.detail = detail;
    this.dispatchEvent(event);
  }
}

// Let pending promise callbacks (a store's fetch after an event) run.
export const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
