// How an API error is shown: its message and, for each detail, where (field, row, column, limit) and why.

import { askForKey, ApiError } from "./api.js";
import { el } from "./dom.js";

const WHERE_KEYS = ["field", "row", "column", "limit", "value", "maximum"];

function where(detail) {
  return WHERE_KEYS.filter((key) => detail[key] !== undefined && detail[key] !== null)
    .map((key) => `${key} ${detail[key]}`)
    .join(", ");
}

/** A role=alert box for `error` (an ApiError or any Error). */
export function errorNotice(error, attrs = {}) {
  const box = el("div", { class: "notice error", role: "alert", ...attrs });
  box.append(el("p", {}, error.message || String(error)));
  const details = error instanceof ApiError ? error.details : [];
  const shown = details.filter((detail) => where(detail) && detail.message !== error.message);
  if (shown.length) {
    box.append(el("ul", {}, shown.map((detail) => el("li", {}, `${where(detail)}: ${detail.message}`))));
  }
  if (error instanceof ApiError && error.status === 401) {
    box.append(
      el("button", { type: "button", onclick: () => askForKey("Enter an API key.").then((ok) => ok && location.reload()) }, "Enter API key"),
    );
  }
  return box;
}
