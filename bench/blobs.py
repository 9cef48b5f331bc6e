"""Blob store benchmark: the local directory vs an S3-compatible store on loopback (`rclone serve s3`).

(a) put/get throughput of 1 MB and 100 MB objects through the blob store interface;
(b) dataset load (what a job does before its first epoch) and model load (a cold prediction's read + parse);
(c) dataset upload latency through the API, and the service benchmark's training job on a stack of each
    backend (worker time `started_at` -> `finished_at`), alternating which backend goes first.

    python -m bench.blobs            # full run: rewrites the "blobs" section of docs/benchmarks.md
    python -m bench.blobs --quick    # smoke run, prints only

Target: the S3 backend's training overhead on the service benchmark's job <= 5%.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

import engine
from backprop.embedded_redis import RedisServer
from backprop.local_stack import LocalStack
from bench._blas_info import load_average
from bench._doc_sections import replace_section
from bench.api_calls import parse_time, submit_job, upload_dataset
from bench.report import Target, run_description, target_table
from tests.s3server import S3Server
from worker import BlobStore, Store, open_blob_store

REPO_ROOT = Path(__file__).resolve().parent.parent
SECTION = "blobs"
TRAIN_OVERHEAD = 0.05
MB = 1_000_000
JOB = {"hidden_layers": [512, 256], "epochs": 20, "batch_size": 64, "optimizer": "adam", "seed": 0}


@dataclass(frozen=True)
class Plan:
    small_rounds: int
    large_rounds: int
    large_bytes: int
    load_rounds: int
    uploads: int
    training_pairs: int
    rows: int


FULL = Plan(
    small_rounds=20, large_rounds=3, large_bytes=100 * MB, load_rounds=10, uploads=5, training_pairs=3, rows=20_000
)
QUICK = Plan(
    small_rounds=3, large_rounds=1, large_bytes=10 * MB, load_rounds=2, uploads=2, training_pairs=1, rows=2_000
)


def timed(call: Callable[[], object], rounds: int) -> float:
    """Median seconds of `call()` over `rounds` runs."""
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def dataset(rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 64))
    y = np.argmax(X[:, :10] + 0.5 * rng.normal(size=(rows, 10)), axis=1)
    return X, y


def throughput(store: BlobStore, size: int, rounds: int) -> tuple[float, float]:
    """(put MB/s, get MB/s) of an object of `size` bytes."""
    data = np.random.default_rng(1).bytes(size)
    sha256 = store.write("bench/object.bin", data)
    put = timed(lambda: store.write("bench/object.bin", data), rounds)
    get = timed(lambda: store.read("bench/object.bin", sha256), rounds)
    store.delete("bench/object.bin")
    return size / MB / put, size / MB / get


def loads(store: Store, plan: Plan) -> tuple[float, float]:
    """(dataset load seconds, model load seconds): the reads behind a job's start and a cold prediction."""
    X, y = dataset(plan.rows)
    record = store.create_dataset(X, y, owner=None)
    model = engine.train(X[:500], y[:500], engine.TrainConfig(hidden_layers=(512, 256), epochs=1)).model
    data = engine.dumps(model)
    sha256 = store.blobs.write("models/bench.npz", data)
    dataset_seconds = timed(lambda: store.load_dataset(record.id), plan.load_rounds)
    model_seconds = timed(lambda: engine.loads(store.blobs.read("models/bench.npz", sha256)), plan.load_rounds)
    return dataset_seconds, model_seconds


def finished_job(client: httpx.Client, job_id: str, timeout: float = 600) -> dict[str, Any]:
    """Poll the job (with its whole history) until it ends; a 503 of a busy machine's Redis is polled past."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/v1/jobs/{job_id}", params={"history_limit": 10_000})
        if response.status_code != 503:
            response.raise_for_status()
            job: dict[str, Any] = response.json()
            if job["status"] in ("succeeded", "failed", "canceled"):
                return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f} s")


def stack_run(
    env: dict[str, str], plan: Plan, X: np.ndarray, y: np.ndarray
) -> tuple[float, list[float], list[float]]:
    """(median upload seconds, worker seconds of each training job, and of each job's worker seconds those
    outside its epochs: loading the dataset, progress, checkpoints, saving the model) on a stack with `env`."""
    env = {**env, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    worker_seconds = []
    outside_seconds = []
    with LocalStack(env=env) as stack, httpx.Client(base_url=stack.url, timeout=120) as client:
        dataset_id = ""

        def upload() -> None:
            nonlocal dataset_id
            dataset_id = upload_dataset(client, X, y, "bench-blobs")

        upload_seconds = timed(upload, plan.uploads)
        for _ in range(plan.training_pairs):
            job = submit_job(client, {"dataset_id": dataset_id, **JOB, "epochs": JOB["epochs"] if plan is FULL else 2})
            done = finished_job(client, job["id"])
            if done["status"] != "succeeded":
                raise RuntimeError(f"benchmark job failed: {done}")
            worker = parse_time(done["finished_at"]) - parse_time(done["started_at"])
            worker_seconds.append(worker)
            outside_seconds.append(worker - sum(float(entry["seconds"]) for entry in done["history"]))
    return upload_seconds, worker_seconds, outside_seconds


def measure(plan: Plan, root: Path) -> dict[str, Any]:
    s3 = S3Server(root / "s3").start()
    redis_server = RedisServer(root / "redis", persistent=False)
    redis_server.start()
    try:
        stores = {"local": open_blob_store(root / "blobs"), "s3": open_blob_store(s3.config(s3.new_location()))}
        results: dict[str, Any] = {name: {} for name in stores}
        conn = redis.Redis.from_url(redis_server.url)
        for name, blobs in stores.items():
            blobs.check()
            results[name]["small"] = throughput(blobs, MB, plan.small_rounds)
            results[name]["large"] = throughput(blobs, plan.large_bytes, plan.large_rounds)
            results[name]["loads"] = loads(Store(conn, blobs), plan)
        X, y = dataset(plan.rows)
        envs = {"local": {}, "s3": s3.env(s3.new_location("stack"))}
        for name in ("s3", "local", "local", "s3")[: 4 if plan is FULL else 2]:
            upload_seconds, worker_seconds, outside_seconds = stack_run(envs[name], plan, X, y)
            results[name].setdefault("upload", []).append(upload_seconds)
            results[name].setdefault("train", []).extend(worker_seconds)
            results[name].setdefault("outside", []).extend(outside_seconds)
        return results
    finally:
        redis_server.stop()
        s3.stop()


def report(results: dict[str, Any], plan: Plan, started: dt.datetime, load_before: str) -> str:
    local, s3 = results["local"], results["s3"]
    train = {name: statistics.median(results[name]["train"]) for name in results}
    outside = {name: statistics.median(results[name]["outside"]) for name in results}
    # The blob store changes only the worker's time outside epochs (dataset load, checkpoints, model save);
    # its epochs are the same computation on either backend, and on a shared machine their times vary by
    # more than the whole I/O, so the overhead is that difference over the local job's worker time.
    overhead = (outside["s3"] - outside["local"]) / train["local"]
    raw = train["s3"] / train["local"] - 1
    large = f"{plan.large_bytes // MB} MB"
    rows = [
        ("put 1 MB (MB/s)", f"{local['small'][0]:.0f}", f"{s3['small'][0]:.0f}"),
        ("get 1 MB (MB/s)", f"{local['small'][1]:.0f}", f"{s3['small'][1]:.0f}"),
        (f"put {large} (MB/s)", f"{local['large'][0]:.0f}", f"{s3['large'][0]:.0f}"),
        (f"get {large} (MB/s)", f"{local['large'][1]:.0f}", f"{s3['large'][1]:.0f}"),
        ("dataset load: train-start (ms)", f"{local['loads'][0] * 1e3:.1f}", f"{s3['loads'][0] * 1e3:.1f}"),
        ("model load: cold predict (ms)", f"{local['loads'][1] * 1e3:.1f}", f"{s3['loads'][1] * 1e3:.1f}"),
        ("upload through the API (ms)", f"{statistics.median(local['upload']) * 1e3:.0f}",
         f"{statistics.median(s3['upload']) * 1e3:.0f}"),
        ("training job, worker seconds", f"{train['local']:.2f}", f"{train['s3']:.2f}"),
        ("... of which outside epochs", f"{outside['local']:.3f}", f"{outside['s3']:.3f}"),
    ]
    measured = f"{overhead:+.1%}"
    targets = [Target("S3 training overhead on the service job", measured, "<= +5%", overhead <= TRAIN_OVERHEAD)]
    lines = [
        "## Blob stores: local directory vs S3 on loopback (`bench/blobs.py`)",
        "",
        *run_description(started, load_before),
        "",
        "### Targets",
        "",
        *target_table(targets),
        "",
        "### Measurements",
        "",
        f"S3 is `rclone serve s3` over a local directory on 127.0.0.1 (boto3, multipart above 8 MiB). "
        f"Medians: {plan.small_rounds} rounds of 1 MB, {plan.large_rounds} of {large}; loads of a "
        f"{plan.rows:,} x 64 dataset and of a 64-512-256-10 model, {plan.load_rounds} rounds each; "
        f"{plan.uploads} NPZ uploads of that dataset per stack; the service benchmark's job "
        f"(`{JOB}`) on a stack of each backend, {plan.training_pairs} jobs per stack, stacks started "
        "s3, local, local, s3.",
        "",
        "| measure | local | S3 |",
        "|---|---:|---:|",
        *[f"| {name} | {a} | {b} |" for name, a, b in rows],
        "",
        f"Training overhead of S3 = (S3 - local worker time outside epochs) / local worker time = "
        f"{overhead:+.1%}; the ratio of whole worker times, which also carries the epochs' noise from the rest "
        f"of the machine, is {raw:+.1%}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Blob store benchmark -> blobs section of docs/benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="short smoke run; prints only")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = dt.datetime.now(dt.UTC)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-blobs-") as root:
        results = measure(plan, Path(root))
    text = report(results, plan, started, load_before)
    print(text)
    if not args.quick:
        replace_section(REPO_ROOT / "docs" / "benchmarks.md", SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
