// Training curves: per-epoch series kept to a bounded number of points, drawn with uPlot (vendored).

export const MAX_POINTS = 4000; // beyond this, every second point is dropped (old epochs thin out, memory stays flat)

const SERIES = {
  loss: [
    ["train_loss", "train loss", "#1f6feb", null],
    ["validation_loss", "validation loss", "#d1242f", [6, 4]],
  ],
  accuracy: [
    ["train_accuracy", "train accuracy", "#1f6feb", null],
    ["validation_accuracy", "validation accuracy", "#d1242f", [6, 4]],
  ],
};

function valueOf(entry, key) {
  const value = entry[key];
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/** Per-epoch columns [epochs, train_loss, validation_loss, train_accuracy, validation_accuracy]. */
export class Curves {
  constructor() {
    this.keys = ["train_loss", "validation_loss", "train_accuracy", "validation_accuracy"];
    this.clear();
  }

  clear() {
    this.epochs = [];
    this.columns = this.keys.map(() => []);
    this.stride = 1; // every point kept stands for `stride` epochs of the oldest part
  }

  get lastEpoch() {
    return this.epochs.length ? this.epochs[this.epochs.length - 1] : 0;
  }

  /** Append one epoch's metrics (ignored unless newer than the last); true when something changed. */
  add(entry) {
    if (!entry || typeof entry.epoch !== "number" || entry.epoch <= this.lastEpoch) return false;
    this.epochs.push(entry.epoch);
    this.keys.forEach((key, index) => this.columns[index].push(valueOf(entry, key)));
    if (this.epochs.length > MAX_POINTS) this.thin();
    return true;
  }

  /** Drop every second point (keeping the newest). */
  thin() {
    const keep = (_, index, array) => (array.length - 1 - index) % 2 === 0;
    this.epochs = this.epochs.filter(keep);
    this.columns = this.columns.map((column) => column.filter(keep));
    this.stride *= 2;
  }

  /** Replace everything with a job's or model's history (the same points `add` would have kept). */
  setHistory(history) {
    this.clear();
    for (const entry of history || []) this.add(entry);
  }

  data(kind) {
    const offset = kind === "loss" ? 0 : 2;
    return [this.epochs, this.columns[offset], this.columns[offset + 1]];
  }
}

/** One uPlot chart of two series of `curves`; `node` carries data-points (points drawn). */
export class CurveChart {
  constructor(node, kind, title) {
    this.node = node;
    this.kind = kind;
    this.plot = null;
    this.pending = null;
    const series = SERIES[kind].map(([, label, stroke, dash]) => ({ label, stroke, dash: dash || undefined, width: 2, spanGaps: true }));
    this.options = {
      title,
      width: Math.max(260, node.clientWidth || 600),
      height: 240,
      scales: { x: { time: false }, y: kind === "accuracy" ? { range: [0, 1] } : {} },
      axes: [{ label: "epoch" }, { label: kind }],
      series: [{ label: "epoch" }, ...series],
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
    };
    node.dataset.points = "0";
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(node);
  }

  fit() {
    if (this.plot && this.node.clientWidth) this.plot.setSize({ width: this.node.clientWidth, height: 240 });
  }

  /** Redraw from `curves` at the next animation frame (many updates in one frame draw once). */
  update(curves) {
    this.pending = curves.data(this.kind).map((column) => column.slice());
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      const data = this.pending;
      if (!this.plot) {
        this.plot = new window.uPlot(this.options, data, this.node);
        this.fit();
      } else {
        this.plot.setData(data);
      }
      this.node.dataset.points = String(data[0].length);
    });
  }

  destroy() {
    this.resize.disconnect();
    if (this.frame) cancelAnimationFrame(this.frame);
    if (this.plot) this.plot.destroy();
  }
}
