// HTTP calls of the demo page. The API key lives in the HttpOnly `vai_token` cookie, which the browser
// attaches by itself (same origin, SameSite=Strict); this code never sees the key after sign-in.

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function call(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (resp.status === 204) return null;
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) throw new ApiError(errorText(data) || `${method} ${path} failed (${resp.status})`, resp.status);
  return data;
}

function errorText(data) {
  if (!data) return "";
  if (data.error && data.error.message) return data.error.message; // /auth (OpenAI shape)
  if (Array.isArray(data.detail) && data.detail.length) return data.detail[0].msg; // /api (REST shape)
  return "";
}

const q = (namespace) => `namespace=${encodeURIComponent(namespace)}`;

export const api = {
  session: () => call("GET", "/auth/session"),
  signIn: (key) => call("POST", "/auth/session", { key }),
  signOut: () => call("DELETE", "/auth/session"),
  memories: (namespace) => call("GET", `/api/v1/memory?${q(namespace)}&limit=100`),
  memory: (namespace, id) => call("GET", `/api/v1/memory/${encodeURIComponent(id)}?${q(namespace)}`),
  deleteMemory: (namespace, id) => call("DELETE", `/api/v1/memory/${encodeURIComponent(id)}?${q(namespace)}`),
};
