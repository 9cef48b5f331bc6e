"""Batch predictions benchmark against a running stack (`backprop serve --workers 1`, temp data dir):

1. a stored dataset of 1,000,000 rows scored by `POST /v1/models/{id}/predictions`: rows/s from submission
   to `succeeded`, and the peak resident set (VmHWM) of the worker's work-horse that computed it;
2. the result streamed as CSV and as .npz (`GET /v1/predictions/{id}/result`): rows/s, and the API
   process' peak resident set;
3. the baseline: the same rows through `POST /v1/models/{id}/predict` in batches of 10,000 over HTTP.

    python -m bench.batch_predictions           # full run: rewrites the "batch-predictions" section
    python -m bench.batch_predictions --quick   # 100,000 rows, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from backprop.local_stack import LocalStack, wait_until
from bench._blas_info import load_average
from bench._doc_sections import replace_section
from bench.api_calls import train_model, upload_dataset
from bench.report import run_description

REPO_ROOT = Path(__file__).resolve().parent.parent
SECTION = "batch-predictions"
FEATURES = 20
CLASSES = 3
BATCH = 10_000
MIB = 1024 * 1024
SETTINGS = {"BACKPROP_MAX_UPLOAD_BYTES": str(1024 * MIB)}
JOB = {"hidden_layers": [64, 32], "epochs": 5, "batch_size": 64, "seed": 0}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def blobs(n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(CLASSES, FEATURES))
    y = rng.integers(0, CLASSES, size=n_samples)
    return centers[y] + rng.normal(size=(n_samples, FEATURES)), y


def _kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakWatcher:
    """Samples VmHWM of the stack's processes every 20 ms; the peak of each pid that appears meanwhile."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.before = set(stack.tree())
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.stack.tree():
                self.peaks[pid] = max(self.peaks.get(pid, 0), _kib(pid, "VmHWM"))
            time.sleep(0.02)

    def new_peak_mib(self) -> float:
        """Peak of the processes that started while watching (the work-horse)."""
        fresh = [peak for pid, peak in self.peaks.items() if pid not in self.before]
        return max(fresh, default=0) / 1024


def api_pid(stack: LocalStack) -> int:
    for pid in stack.tree():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"uvicorn" in cmdline or b" api" in cmdline:
            return pid
    raise RuntimeError("no API process under backprop serve")


def score(client: httpx.Client, stack: LocalStack, model_id: str, dataset_id: str, rows: int) -> dict[str, Any]:
    with PeakWatcher(stack) as watcher:
        started = time.monotonic()
        response = client.post(f"/v1/models/{model_id}/predictions", json={"dataset_id": dataset_id})
        response.raise_for_status()
        prediction_id = response.json()["id"]
        record: dict[str, Any] = {}

        def ended() -> bool:
            nonlocal record
            record = client.get(f"/v1/predictions/{prediction_id}").json()
            return record["status"] in ("succeeded", "failed", "canceled")

        wait_until(ended, 3600, "batch prediction finished", interval=0.2)
        seconds = time.monotonic() - started
    if record["status"] != "succeeded":
        raise RuntimeError(f"batch prediction: {record}")
    return {"id": prediction_id, "seconds": seconds, "rows_per_s": rows / seconds, "horse_mib": watcher.new_peak_mib()}


def download(client: httpx.Client, stack: LocalStack, prediction_id: str, fmt: str, rows: int) -> dict[str, Any]:
    pid = api_pid(stack)
    rss_before = _kib(pid, "VmRSS") / 1024
    peak = 0
    size = 0
    started = time.monotonic()
    with client.stream("GET", f"/v1/predictions/{prediction_id}/result", params={"format": fmt}) as response:
        response.raise_for_status()
        for piece in response.iter_bytes():
            size += len(piece)
            peak = max(peak, _kib(pid, "VmRSS"))
    seconds = time.monotonic() - started
    return {
        "format": fmt,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "mib": size / MIB,
        "api_rss_before": rss_before,
        "api_rss_peak": peak / 1024,
    }


def predict_batches(client: httpx.Client, model_id: str, X: np.ndarray) -> dict[str, Any]:
    started = time.monotonic()
    for start in range(0, len(X), BATCH):
        body = {"instances": X[start : start + BATCH].tolist()}
        client.post(f"/v1/models/{model_id}/predict", json=body).raise_for_status()
    seconds = time.monotonic() - started
    return {"seconds": seconds, "rows_per_s": len(X) / seconds}


def render(
    rows: int,
    batch: dict[str, Any],
    downloads: list[dict[str, Any]],
    baseline: dict[str, Any],
    started: dt.datetime,
    load: str,
) -> str:
    lines = ["## Batch predictions (`bench/batch_predictions.py`)", ""]
    lines += run_description(started, load)
    lines += [
        f"- Stack: `backprop serve --workers 1` on a temporary data directory; `{SETTINGS}`, default "
        "`BACKPROP_PREDICTION_CHUNK_ROWS=65536`. The machine is shared and was loaded by other work "
        "(see the load average): the rates are lower bounds of what it can do alone.",
        f"- Model: {FEATURES} features -> {JOB['hidden_layers']} -> {CLASSES} classes (relu, softmax). "
        f"Input: a stored dataset of {rows:,} rows x {FEATURES} features (uploaded as a float64 NPZ, stored "
        f"as float32, the default `BACKPROP_DATASET_DTYPE`: {rows * FEATURES * 4 / MIB:.0f} MiB of features).",
        "",
        "| what | seconds | rows/s | memory |",
        "|---|---:|---:|---|",
        f"| batch prediction, submit -> succeeded | {batch['seconds']:.1f} | {batch['rows_per_s']:,.0f} | "
        f"work-horse peak RSS {batch['horse_mib']:.0f} MiB |",
    ]
    for item in downloads:
        lines.append(
            f"| result as {item['format']} ({item['mib']:.0f} MiB), streamed | {item['seconds']:.1f} | "
            f"{item['rows_per_s']:,.0f} | API RSS {item['api_rss_before']:.0f} -> peak {item['api_rss_peak']:.0f} MiB |"
        )
    lines += [
        f"| `POST /predict` in batches of {BATCH:,} (JSON over HTTP, one client) | {baseline['seconds']:.1f} | "
        f"{baseline['rows_per_s']:,.0f} | |",
        "",
        f"Batch prediction is {batch['rows_per_s'] / baseline['rows_per_s']:.1f}x the rows/s of the batched "
        "`predict` calls (which also leave the client holding JSON it must parse). The work-horse reads the "
        "input in chunks of rows, writes the result blob chunk by chunk and keeps 4 bytes per row (the class "
        "index) until the `predictions` array is written; its peak RSS includes the worker process it forked "
        "from (NumPy, the engine). The API streams the result without holding it: the .npz adds a few MiB, the "
        "CSV about 30 MiB (one chunk of 65,536 rows as Python objects and text), whatever the number of rows.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Batch predictions benchmark -> docs/benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="100,000 rows; prints only")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    rows = 100_000 if args.quick else 1_000_000
    started = dt.datetime.now(dt.UTC)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="backprop-bench-batch-") as tmp:
        stack = LocalStack(Path(tmp) / "var", workers=1, env=SETTINGS)
        with stack, httpx.Client(base_url=stack.url, timeout=600) as client:
            log(f"stack up at {stack.url}")
            model_id = train_model(client, *blobs(3000, seed=1), JOB)
            X, y = blobs(rows, seed=2)
            dataset_id = upload_dataset(client, X, y, "bench-batch")
            log(f"model {model_id}, dataset {dataset_id} ({rows} rows)")
            batch = score(client, stack, model_id, dataset_id, rows)
            log(f"batch prediction: {batch}")
            downloads = [download(client, stack, batch["id"], fmt, rows) for fmt in ("npz", "csv")]
            log(f"downloads: {downloads}")
            baseline = predict_batches(client, model_id, X)
            log(f"predict in batches: {baseline}")
    text = render(rows, batch, downloads, baseline, started, load_before)
    if args.quick:
        log("\n" + text)
    else:
        replace_section(args.output, SECTION, text)
        log(f"wrote the {SECTION} section of {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
