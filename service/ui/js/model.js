// Model page: architecture, classes, metrics, final curves, and a predict form with a probability bar per class.

import { api } from "./api.js";
import { Curves, CurveChart } from "./chart.js";
import { parseRows } from "./csv.js";
import { definitionList, el, formatDate, formatNumber, replace } from "./dom.js";
import { errorNotice } from "./notice.js";

const MAX_FILE_BYTES = 1024 * 1024;

function metricsTable(metrics) {
  const entries = Object.entries(metrics || {});
  if (!entries.length) return el("p", { class: "muted" }, "No metrics.");
  return el(
    "table",
    { class: "metrics" },
    el("caption", { class: "visually-hidden" }, "Metrics"),
    el("tbody", {}, entries.map(([name, value]) => el("tr", {}, el("th", { scope: "row" }, name.replace(/_/g, " ")), el("td", { class: "num" }, formatNumber(value))))),
  );
}

function resultView(prediction) {
  const rows = prediction.predictions.map((label, index) =>
    el(
      "li",
      { class: "prediction" },
      el("p", {}, el("span", { class: "muted" }, `Row ${index + 1}: `), el("strong", { dataset: { testid: "predicted-label" } }, String(label))),
      el(
        "ul",
        { class: "bars" },
        prediction.classes.map((cls, column) => {
          const p = prediction.probabilities[index][column];
          const id = `p-${index}-${column}`;
          return el(
            "li",
            {},
            el("label", { for: id }, String(cls)),
            el("meter", { id, min: 0, max: 1, value: p }, `${(p * 100).toFixed(1)} %`),
            el("span", { class: "num" }, `${(p * 100).toFixed(1)} %`),
          );
        }),
      ),
    ),
  );
  return el("ol", { class: "predictions" }, rows);
}

function predictForm(model) {
  const input = el("textarea", {
    id: "predict-input",
    rows: 5,
    spellcheck: "false",
    "aria-describedby": "predict-hint",
    dataset: { testid: "predict-input" },
  });
  const file = el("input", { id: "predict-file", type: "file", accept: ".csv,text/csv" });
  const result = el("div", { dataset: { testid: "predict-result" }, "aria-live": "polite" });
  const submit = el("button", { type: "submit", dataset: { testid: "predict-submit" } }, "Predict");
  file.addEventListener("change", async () => {
    const chosen = file.files[0];
    if (!chosen) return;
    if (chosen.size > MAX_FILE_BYTES) {
      replace(result, errorNotice(new Error(`${chosen.name} is larger than 1 MiB; paste fewer rows.`)));
      return;
    }
    input.value = await chosen.text();
  });
  const form = el(
    "form",
    { class: "stack", dataset: { testid: "predict-form" } },
    el("label", { for: "predict-input" }, `Feature rows (${model.n_features} numbers each, one row per line)`),
    input,
    el("p", { class: "hint", id: "predict-hint" }, "Comma-separated; a header line is skipped. Or load a small CSV of feature columns:"),
    el("div", { class: "field" }, el("label", { for: "predict-file" }, "CSV file"), file),
    el("div", { class: "actions" }, submit),
  );
  form.addEventListener("dragover", (event) => event.preventDefault());
  form.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer?.files.length) {
      file.files = event.dataTransfer.files;
      file.dispatchEvent(new Event("change"));
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let instances;
    try {
      instances = parseRows(input.value);
      if (!instances.length) throw new Error("Enter at least one row of numbers.");
    } catch (error) {
      replace(result, errorNotice(error));
      return;
    }
    submit.disabled = true;
    try {
      const prediction = await api(`/v1/models/${encodeURIComponent(model.id)}/predict`, { method: "POST", json: { instances } });
      replace(result, resultView(prediction));
    } catch (error) {
      replace(result, errorNotice(error));
    } finally {
      submit.disabled = false;
    }
  });
  return el("div", {}, form, result);
}

export async function render(main, params, signal) {
  const model = await api(`/v1/models/${encodeURIComponent(params.modelId)}`, { signal });
  document.title = `Model ${model.name} v${model.version} · Backprop`;
  const lossNode = el("div", { class: "chart", dataset: { testid: "loss-chart" }, role: "img", "aria-label": "Loss per epoch" });
  const accuracyNode = el("div", { class: "chart", dataset: { testid: "accuracy-chart" }, role: "img", "aria-label": "Accuracy per epoch" });
  main.append(
    el("h1", {}, `Model ${model.name} v${model.version}`),
    el(
      "div",
      { class: "split" },
      el(
        "section",
        { "aria-labelledby": "model-about" },
        el("h2", { id: "model-about" }, "Architecture"),
        definitionList([
          ["Layers", model.layer_sizes.join(" → ")],
          ["Activation", model.activation],
          ["Output", model.output],
          ["Parameters", formatNumber(model.n_parameters)],
          ["Features", formatNumber(model.n_features)],
          ["Job", el("a", { href: `#/jobs/${encodeURIComponent(model.job_id)}` }, model.job_id)],
          ["Created", formatDate(model.created_at)],
        ]),
        el("h2", {}, `Classes (${model.classes.length})`),
        el("ul", { class: "classes", dataset: { testid: "model-classes" } }, model.classes.map((cls) => el("li", {}, String(cls)))),
        el("h2", {}, "Metrics"),
        metricsTable(model.metrics),
      ),
      el("section", { "aria-labelledby": "model-predict" }, el("h2", { id: "model-predict" }, "Predict"), predictForm(model)),
    ),
    el("section", { class: "charts", "aria-label": "Training curves" }, lossNode, accuracyNode),
  );
  const curves = new Curves();
  curves.setHistory(model.history);
  const charts = [new CurveChart(lossNode, "loss", "Loss"), new CurveChart(accuracyNode, "accuracy", "Accuracy")];
  charts.forEach((chart) => chart.update(curves));
  signal.addEventListener("abort", () => charts.forEach((chart) => chart.destroy()));
}
