// Overview: datasets, jobs by status (refreshed every few seconds) and models with their validation metrics.

import { api } from "./api.js";
import { el, formatDate, formatNumber, replace, statusBadge } from "./dom.js";
import { errorNotice } from "./notice.js";

const STATUSES = ["queued", "running", "stalled", "succeeded", "failed", "canceled"];
const REFRESH_MS = 2000;

/** Headings starting with "#" are numeric columns (right-aligned); the "#" is not shown. */
function table(caption, headings, rows, empty) {
  if (!rows.length) return el("p", { class: "muted" }, empty);
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      {},
      el("caption", { class: "visually-hidden" }, caption),
      el("thead", {}, el(
          "tr",
          {},
          headings.map((heading) =>
            heading.startsWith("#") ? el("th", { scope: "col", class: "num" }, heading.slice(1)) : el("th", { scope: "col" }, heading),
          ),
        )),
      el("tbody", {}, rows),
    ),
  );
}

function datasetsSection(list) {
  const rows = list.items.map((dataset) =>
    el(
      "tr",
      {},
      el("td", { class: "name" }, dataset.name || dataset.id.slice(0, 8)),
      el("td", { class: "num" }, formatNumber(dataset.n_samples)),
      el("td", { class: "num" }, formatNumber(dataset.n_features)),
      el("td", { class: "num" }, Object.keys(dataset.classes).length),
      el("td", {}, el("a", { href: `#/jobs/new?dataset=${encodeURIComponent(dataset.id)}` }, "Train")),
    ),
  );
  return [
    el("h2", {}, `Datasets (${list.total})`),
    table("Datasets", ["Name", "#Rows", "#Features", "#Classes", ""], rows, "No datasets yet: upload one."),
  ];
}

function jobsSection(list) {
  const counts = Object.fromEntries(STATUSES.map((status) => [status, 0]));
  for (const job of list.items) counts[job.status] = (counts[job.status] || 0) + 1;
  const rows = list.items.map((job) =>
    el(
      "tr",
      {},
      el("td", { class: "name" }, el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, dataset: { testid: "job-link" } }, job.name)),
      el("td", {}, statusBadge(job.status)),
      el("td", { class: "num" }, job.progress ? `${job.progress.epoch}/${job.progress.epochs ?? "?"}` : "–"),
      el("td", {}, formatDate(job.created_at)),
    ),
  );
  return [
    el("h2", {}, `Jobs (${list.total})`),
    el(
      "ul",
      { class: "counts", "aria-label": "Jobs by status (of the latest 100)" },
      STATUSES.map((status) => el("li", {}, statusBadge(status), " ", el("strong", {}, counts[status]))),
    ),
    table("Jobs", ["Name", "Status", "#Epoch", "Created"], rows, "No jobs yet."),
  ];
}

function metric(model, name) {
  return model.metrics && typeof model.metrics[name] === "number" ? formatNumber(model.metrics[name]) : "–";
}

function modelsSection(list) {
  const rows = list.items.map((model) =>
    el(
      "tr",
      {},
      el(
        "td",
        { class: "name" },
        el("a", { href: `#/models/${encodeURIComponent(model.id)}`, dataset: { testid: "model-link" } }, `${model.name} v${model.version}`),
      ),
      el("td", { class: "num" }, metric(model, "validation_accuracy")),
      el("td", { class: "num" }, metric(model, "validation_loss")),
      el("td", { class: "num" }, metric(model, "train_accuracy")),
      el("td", {}, formatDate(model.created_at)),
    ),
  );
  return [
    el("h2", {}, `Models (${list.total})`),
    table("Models", ["Model", "#Val. accuracy", "#Val. loss", "#Train accuracy", "Created"], rows, "No models yet."),
  ];
}

export async function render(main, _params, signal) {
  document.title = "Overview · Backprop";
  const datasets = el("section", { "aria-label": "Datasets" });
  const jobs = el("section", { "aria-label": "Jobs", dataset: { testid: "overview-jobs" } });
  const models = el("section", { "aria-label": "Models" });
  main.append(el("h1", {}, "Overview"), el("div", { class: "grid" }, datasets, jobs, models));
  let refreshModels = true;
  const refresh = async () => {
    const [datasetList, jobList, modelList] = await Promise.all([
      api("/v1/datasets?limit=100", { signal }),
      api("/v1/jobs?limit=100", { signal }),
      refreshModels ? api("/v1/models?limit=100", { signal }) : Promise.resolve(null),
    ]);
    replace(datasets, datasetsSection(datasetList));
    const before = jobs.dataset.finished;
    replace(jobs, jobsSection(jobList));
    jobs.dataset.finished = String(jobList.items.filter((job) => job.status === "succeeded").length);
    if (modelList) replace(models, modelsSection(modelList));
    refreshModels = before !== jobs.dataset.finished; // a job that succeeded made a model
  };
  await refresh();
  const loop = async () => {
    while (!signal.aborted) {
      await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
      if (signal.aborted) return;
      try {
        await refresh();
      } catch (error) {
        if (error.name === "AbortError") return;
        replace(jobs, errorNotice(error));
      }
    }
  };
  loop();
}
