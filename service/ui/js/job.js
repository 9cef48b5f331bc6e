// Job page: status, progress, ETA, throughput, attempts, status changes, error, live curves and Cancel.

import { api } from "./api.js";
import { Curves, CurveChart } from "./chart.js";
import { definitionList, el, formatDate, formatNumber, formatSeconds, replace, statusBadge } from "./dom.js";
import { TERMINAL, follow } from "./live.js";
import { errorNotice } from "./notice.js";

const REFILL_MS = 1000;

function progressView() {
  const bar = el("progress", { id: "job-progress", max: 1, value: 0, dataset: { testid: "job-progress" } });
  const text = el("span", { class: "muted" });
  return {
    node: el("div", { class: "progress" }, el("label", { for: "job-progress" }, "Progress"), bar, text),
    show(progress, status) {
      if (!progress) {
        replace(text, status === "queued" ? "waiting for a worker" : "–");
        return;
      }
      const epochs = progress.epochs || progress.epoch || 1;
      bar.max = epochs;
      bar.value = Math.min(progress.epoch, epochs);
      replace(text, `epoch ${progress.epoch} of ${epochs}`);
    },
  };
}

export async function render(main, params, signal) {
  const jobId = params.jobId;
  let job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal });
  document.title = `Job ${job.name} · Backprop`;

  const status = el("span", { dataset: { testid: "job-status" }, "aria-live": "polite" });
  const progress = progressView();
  const facts = el("div");
  const changes = el("ol", { class: "changes", "aria-label": "Status changes" });
  const problem = el("div");
  const mode = el("p", { class: "muted small", dataset: { testid: "job-feed" } });
  const modelLink = el("p");
  const cancel = el("button", { type: "button", class: "danger", dataset: { testid: "cancel-job" } }, "Cancel job");
  const lossNode = el("div", { class: "chart", dataset: { testid: "loss-chart" }, role: "img", "aria-label": "Loss per epoch" });
  const accuracyNode = el("div", { class: "chart", dataset: { testid: "accuracy-chart" }, role: "img", "aria-label": "Accuracy per epoch" });
  main.append(
    el("h1", {}, "Job ", job.name),
    el("div", { class: "job-head" }, el("p", { class: "status-line" }, "Status: ", status), cancel),
    progress.node,
    facts,
    problem,
    modelLink,
    el("section", { class: "charts", "aria-label": "Training curves" }, lossNode, accuracyNode),
    mode,
    el("h2", {}, "Status changes"),
    changes,
  );

  const curves = new Curves();
  const charts = [new CurveChart(lossNode, "loss", "Loss"), new CurveChart(accuracyNode, "accuracy", "Accuracy")];
  signal.addEventListener("abort", () => {
    charts.forEach((chart) => chart.destroy());
    if (stateFrame) cancelAnimationFrame(stateFrame);
  });
  const redraw = () => charts.forEach((chart) => chart.update(curves));
  let lastChange = null;
  let latest = job.progress;

  function noteChange(state, attempt) {
    const key = `${state}/${attempt}`;
    if (key === lastChange) return;
    const requeued = lastChange && state === "queued" && lastChange.split("/")[0] !== "queued";
    lastChange = key;
    const label = requeued ? `re-queued (attempt ${attempt})` : `${state}${attempt ? ` (attempt ${attempt})` : ""}`;
    changes.append(el("li", {}, el("time", {}, new Date().toLocaleTimeString("en-GB")), " ", label));
  }

  function showState(record) {
    if (status.dataset.status !== record.status) {
      replace(status, statusBadge(record.status)); // a live region: only a change is announced
      status.dataset.status = record.status;
    }
    progress.show(latest, record.status);
    const p = latest || {};
    replace(
      facts,
      definitionList([
        ["Dataset", record.dataset_id],
        ["Attempts", formatNumber(record.attempts)],
        ["ETA", TERMINAL.has(record.status) ? "–" : formatSeconds(p.eta_seconds)],
        ["Samples/s", formatNumber(p.samples_per_second, 3)],
        ["Train loss", formatNumber(p.train_loss)],
        ["Validation accuracy", formatNumber(p.validation_accuracy)],
        ["Queue position", record.queue_position ?? "–"],
        ["Created", formatDate(record.created_at)],
      ]),
    );
    cancel.disabled = TERMINAL.has(record.status);
    cancel.hidden = TERMINAL.has(record.status);
    replace(problem, record.error ? errorNotice(new Error(record.error), { dataset: { testid: "job-error" } }) : null);
    replace(
      modelLink,
      record.model_id
        ? el("a", { class: "button", href: `#/models/${encodeURIComponent(record.model_id)}`, dataset: { testid: "model-link" } }, "Open the model")
        : null,
    );
    noteChange(record.status, record.attempts);
  }

  function onJob(record) {
    job = record;
    latest = record.progress || latest;
    curves.setHistory(record.history);
    curves.add(record.progress);
    redraw();
    showState(record);
  }

  let refilling = null; // an event skipped epochs (progress is rate-limited): fetch the history, at most once a second
  function refill() {
    if (refilling || signal.aborted) return;
    refilling = setTimeout(async () => {
      try {
        const record = await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal });
        if (!TERMINAL.has(job.status)) onJob(record);
      } catch {
        /* the stream or the poll shows the next state */
      } finally {
        refilling = null;
      }
    }, REFILL_MS);
  }

  let stateFrame = null; // events may come faster than frames: the facts are redrawn once per frame
  function showStateSoon() {
    if (stateFrame) return;
    stateFrame = requestAnimationFrame(() => {
      stateFrame = null;
      showState(job);
    });
  }

  const handlers = {
    onJob,
    onProgress(p) {
      latest = p;
      if (p.epoch > curves.lastEpoch + 1) refill();
      else if (curves.add(p)) redraw();
      showStateSoon();
    },
    onStatus(change) {
      job = { ...job, status: change.status, attempts: change.attempt ?? job.attempts };
      showState(job);
    },
    onMode(name) {
      mode.dataset.mode = name;
      replace(mode, name === "events" ? "Live: event stream." : "Live: polling every second.");
    },
  };

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      onJob(await api(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" }));
    } catch (error) {
      replace(problem, errorNotice(error));
      cancel.disabled = false;
    }
  });

  onJob(job);
  if (!TERMINAL.has(job.status)) {
    follow(jobId, handlers, signal).catch((error) => {
      if (!signal.aborted) replace(problem, errorNotice(error));
    });
  }
}
