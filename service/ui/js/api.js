// The API client: fetch with the key from sessionStorage as a Bearer token; a 401 opens the key dialog.

const KEY_STORAGE = "backprop.apiKey";
let pendingKey = null; // one dialog for every request that got a 401 at the same time

export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

export function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

/** Ask for a key in the dialog; resolves true when one was entered, false when cancelled. */
export function askForKey(reason) {
  if (pendingKey) return pendingKey;
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("api-key-input");
  document.getElementById("key-dialog-reason").textContent = reason;
  input.value = "";
  pendingKey = new Promise((resolve) => {
    const done = (entered) => {
      dialog.removeEventListener("close", onClose);
      pendingKey = null;
      resolve(entered);
    };
    const onClose = () => {
      const key = input.value.trim();
      if (dialog.returnValue === "save" && key) {
        setApiKey(key);
        done(true);
      } else {
        done(false);
      }
    };
    dialog.addEventListener("close", onClose);
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
  return pendingKey;
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = body && body.error ? body.error : {};
  return new ApiError(
    response.status,
    error.code || `http_${response.status}`,
    error.message || `${response.status} ${response.statusText}`,
    Array.isArray(error.details) ? error.details : [],
  );
}

/**
 * Call the API. `json` is sent as a JSON body, `form` as multipart. Resolves to the parsed JSON (null for 204);
 * rejects with ApiError. A 401 asks for a key and retries until one works or the dialog is cancelled.
 */
export async function api(path, { method = "GET", json, form, signal } = {}) {
  for (;;) {
    const headers = authHeaders({ Accept: "application/json" });
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;
    }
    const response = await fetch(path, { method, headers, body, signal });
    if (response.status === 401) {
      const reason = apiKey() ? "That key was not accepted. Enter another API key." : "This API needs a key.";
      if (await askForKey(reason)) continue;
      throw await errorFrom(response);
    }
    if (!response.ok) throw await errorFrom(response);
    if (response.status === 204) return null;
    return response.json();
  }
}

let openapi = null;

/** The API's OpenAPI document (fetched once per page load). */
export function openApiDocument() {
  if (!openapi) {
    openapi = api("/openapi.json").catch((error) => {
      openapi = null;
      throw error;
    });
  }
  return openapi;
}

/** Resolve a local `$ref` ("#/components/schemas/X") against the document. */
export function resolveRef(document_, schema) {
  let current = schema;
  for (let depth = 0; current && current.$ref && depth < 20; depth++) {
    const path = current.$ref.replace(/^#\//, "").split("/");
    current = path.reduce((node, part) => (node ? node[part] : undefined), document_);
  }
  return current || {};
}
