// The dashboard's router: one page per location hash; each page module exports render(main, params, signal).

import { askForKey, setApiKey } from "./api.js";
import { replace } from "./dom.js";
import { errorNotice } from "./notice.js";

const ROUTES = [
  [/^#?\/?$/, "overview", () => import("./overview.js")],
  [/^#\/upload$/, "upload", () => import("./upload.js")],
  [/^#\/jobs\/new$/, "new-job", () => import("./newjob.js")],
  [/^#\/jobs\/([^/?]+)$/, "job", () => import("./job.js"), "jobId"],
  [/^#\/models\/([^/?]+)$/, "model", () => import("./model.js"), "modelId"],
];

let current = null; // AbortController of the page on screen: aborted when the user navigates away

function parse(hash) {
  const [path, query = ""] = hash.split("?");
  for (const [pattern, name, load, paramName] of ROUTES) {
    const match = pattern.exec(path);
    if (match) {
      const params = Object.fromEntries(new URLSearchParams(query));
      if (paramName) params[paramName] = decodeURIComponent(match[1]);
      return { name, load, params };
    }
  }
  return null;
}

async function show() {
  if (current) current.abort();
  const controller = new AbortController();
  current = controller;
  const main = document.getElementById("main");
  const route = parse(location.hash);
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (route && link.dataset.nav === route.name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!route) {
    replace(main, errorNotice(new Error(`No page at ${location.hash}.`)));
    return;
  }
  try {
    const page = await route.load();
    if (controller.signal.aborted) return;
    replace(main);
    await page.render(main, route.params, controller.signal);
  } catch (error) {
    if (controller.signal.aborted || error.name === "AbortError") return;
    replace(main, errorNotice(error));
  }
}

function setUpKeyDialog() {
  const dialog = document.getElementById("key-dialog");
  document.getElementById("key-cancel").addEventListener("click", () => dialog.close("cancel"));
  document.getElementById("key-forget").addEventListener("click", () => {
    setApiKey(null);
    dialog.close("cancel");
    show();
  });
  document.getElementById("key-button").addEventListener("click", async () => {
    if (await askForKey("Enter the API key to use in this tab.")) show();
  });
}

window.addEventListener("hashchange", () => {
  show();
  document.getElementById("main").focus({ preventScroll: true });
});
setUpKeyDialog();
show();
