// Upload: a CSV or NPZ by drag-and-drop or file picker; for a CSV the label column is picked from its header.

import { api } from "./api.js";
import { readHeader } from "./csv.js";
import { el, formatNumber, replace } from "./dom.js";
import { errorNotice } from "./notice.js";

function isCsv(file) {
  return !/\.npz$/i.test(file.name);
}

export async function render(main) {
  document.title = "Upload · Backprop";
  const fileInput = el("input", {
    id: "dataset-file",
    type: "file",
    accept: ".csv,.npz,text/csv",
    required: true,
    dataset: { testid: "dataset-upload" },
  });
  const labelSelect = el("select", { id: "label-column", name: "label_column", disabled: true, dataset: { testid: "label-column" } });
  const nameInput = el("input", {
    id: "dataset-name",
    name: "name",
    type: "text",
    pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}",
    maxlength: 64,
    placeholder: "from the file name",
    "aria-describedby": "dataset-name-hint",
  });
  const chosen = el("p", { class: "muted", id: "dataset-chosen", "aria-live": "polite" }, "No file chosen.");
  const result = el("div", { id: "upload-result", "aria-live": "polite" });
  const submit = el("button", { type: "submit", dataset: { testid: "dataset-submit" } }, "Upload");

  const drop = el(
    "div",
    { class: "drop", dataset: { testid: "dataset-drop" } },
    el("label", { for: "dataset-file" }, "CSV or NPZ file"),
    el("p", { class: "muted" }, "Drop a file here, or choose one."),
    fileInput,
    chosen,
  );

  async function fileChosen() {
    const file = fileInput.files[0];
    replace(result);
    if (!file) {
      replace(chosen, "No file chosen.");
      return;
    }
    replace(chosen, `${file.name} (${formatNumber(file.size)} bytes)`);
    if (!isCsv(file)) {
      replace(labelSelect, el("option", { value: "" }, "labels: the NPZ's y array"));
      labelSelect.disabled = true;
      return;
    }
    const header = await readHeader(file);
    replace(labelSelect, header.map((name) => el("option", { value: name }, name)));
    labelSelect.disabled = header.length === 0;
    labelSelect.value = header[header.length - 1] ?? "";
  }

  fileInput.addEventListener("change", fileChosen);
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer && event.dataTransfer.files.length) {
      fileInput.files = event.dataTransfer.files;
      fileChosen();
    }
  });

  const form = el(
    "form",
    { class: "stack", dataset: { testid: "dataset-form" } },
    drop,
    el("div", { class: "field" }, el("label", { for: "label-column" }, "Label column"), labelSelect),
    el(
      "div",
      { class: "field" },
      el("label", { for: "dataset-name" }, "Name (optional)"),
      nameInput,
      el("p", { class: "hint", id: "dataset-name-hint" }, "Letters, digits, '.', '_' and '-'; up to 64 characters."),
    ),
    el("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = fileInput.files[0];
    if (!file) return;
    const body = new FormData();
    body.append("file", file, file.name);
    if (isCsv(file) && labelSelect.value) body.append("label_column", labelSelect.value);
    if (nameInput.value.trim()) body.append("name", nameInput.value.trim());
    submit.disabled = true;
    replace(result, el("p", { class: "muted" }, "Uploading…"));
    try {
      const dataset = await api("/v1/datasets", { method: "POST", form: body });
      replace(
        result,
        el(
          "div",
          { class: "notice ok", dataset: { testid: "upload-ok" } },
          el("p", {}, `Dataset ${dataset.name || dataset.id}: ${formatNumber(dataset.n_samples)} rows, ${dataset.n_features} features, ${Object.keys(dataset.classes).length} classes.`),
          el("a", { class: "button", href: `#/jobs/new?dataset=${encodeURIComponent(dataset.id)}`, dataset: { testid: "train-link" } }, "Train a model on it"),
        ),
      );
    } catch (error) {
      replace(result, errorNotice(error, { dataset: { testid: "upload-error" } }));
    } finally {
      submit.disabled = false;
    }
  });

  main.append(
    el("h1", {}, "Upload a dataset"),
    el("p", {}, "A CSV with a header row (every column but the label numeric), or an NPZ with arrays X and y."),
    el("div", { class: "split" }, form, result),
  );
}
