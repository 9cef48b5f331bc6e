// New job: every option of the OpenAPI document's JobCreate schema, with its default and allowed values.

import { api, openApiDocument, resolveRef } from "./api.js";
import { el, replace } from "./dom.js";
import { errorNotice } from "./notice.js";
import { describe, fieldNode, fieldValue } from "./schemaform.js";

// Shown first; every other option of the schema goes under "More options" (the list only orders them).
const PRIMARY = ["name", "hidden_layers", "activation", "epochs", "batch_size", "optimizer", "learning_rate", "validation_fraction"];

function jobCreateSchema(document_) {
  const operation = document_.paths?.["/v1/jobs"]?.post;
  const ref = operation?.requestBody?.content?.["application/json"]?.schema;
  return resolveRef(document_, ref || document_.components?.schemas?.JobCreate || {});
}

function datasetField(datasets, selected) {
  const select = el(
    "select",
    { id: "field-dataset_id", name: "dataset_id", required: true, dataset: { field: "dataset_id" } },
    datasets.map((dataset) =>
      el(
        "option",
        { value: dataset.id, selected: dataset.id === selected },
        `${dataset.name || dataset.id.slice(0, 8)} (${dataset.n_samples} rows, ${Object.keys(dataset.classes).length} classes)`,
      ),
    ),
  );
  const error = el("p", { class: "field-error", id: "field-dataset_id-error", dataset: { errorFor: "dataset_id" } });
  select.setAttribute("aria-describedby", error.id);
  return {
    node: el("div", { class: "field" }, el("label", { for: "field-dataset_id" }, "Dataset"), select, error),
    input: select,
    error,
    field: { name: "dataset_id", kind: "choice", choices: datasets.map((d) => d.id) },
  };
}

function rootField(path) {
  return String(path || "").split(/[.[]/)[0];
}

function showErrors(fields, more, error, summary) {
  const byName = new Map(fields.map((entry) => [entry.field.name, entry]));
  const placed = [];
  for (const detail of error.details || []) {
    const entry = byName.get(rootField(detail.field));
    if (!entry) continue;
    const text = detail.field === entry.field.name ? detail.message : `${detail.field}: ${detail.message}`;
    entry.error.textContent = entry.error.textContent ? `${entry.error.textContent} ${text}` : text;
    entry.input.setAttribute("aria-invalid", "true");
    if (more.contains(entry.node)) more.open = true;
    placed.push(entry);
  }
  replace(summary, errorNotice(error, { dataset: { testid: "job-error" } }));
  if (placed.length) placed[0].input.focus();
}

export async function render(main, params, signal) {
  document.title = "New job · Backprop";
  const [document_, datasets] = await Promise.all([openApiDocument(), api("/v1/datasets?limit=100", { signal })]);
  main.append(el("h1", {}, "New training job"));
  if (!datasets.items.length) {
    main.append(el("p", {}, "No dataset yet. ", el("a", { href: "#/upload" }, "Upload one"), " first."));
    return;
  }
  const schema = jobCreateSchema(document_);
  const names = Object.keys(schema.properties || {}).filter((name) => name !== "dataset_id");
  const ordered = [...PRIMARY.filter((name) => names.includes(name)), ...names.filter((name) => !PRIMARY.includes(name))];
  const fields = [datasetField(datasets.items, params.dataset)];
  const primary = el("div", { class: "fields" }, fields[0].node);
  const extra = el("div", { class: "fields" });
  const more = el("details", { class: "more" }, el("summary", {}, "More options"), extra);
  for (const name of ordered) {
    const entry = fieldNode(describe(document_, name, schema.properties[name]));
    fields.push(entry);
    (PRIMARY.includes(name) ? primary : extra).append(entry.node);
  }
  const summary = el("div", { "aria-live": "polite" });
  const submit = el("button", { type: "submit", dataset: { testid: "job-submit" } }, "Start training");
  const form = el("form", { class: "stack", dataset: { testid: "job-form" }, novalidate: false }, primary, more, summary, el("div", { class: "actions" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const entry of fields) {
      entry.error.textContent = "";
      entry.input.removeAttribute("aria-invalid");
    }
    replace(summary);
    const body = {};
    for (const entry of fields) {
      const value = fieldValue(entry);
      if (value !== undefined) body[entry.field.name] = value;
    }
    submit.disabled = true;
    try {
      const job = await api("/v1/jobs", { method: "POST", json: body });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (error) {
      showErrors(fields, more, error, summary);
    } finally {
      submit.disabled = false;
    }
  });
  main.append(form);
}
