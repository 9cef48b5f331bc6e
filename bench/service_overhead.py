"""Service benchmark against a running stack (`backprop serve`, temp data dir, free loopback port):

(a) 1-row predictions at concurrency 1 and 32 (requests/s, p50, p99), next to no-op routes of the same app
    (bench/noop_app.py, served by uvicorn as `backprop api` serves the real app) as the ceiling;
(b) enqueue -> start latency of tiny jobs on an idle worker (the job record's created_at -> started_at);
(c) the same training job through the service and through `engine.train` in this process.

    python -m bench.service_overhead        # full run (~5 min): rewrites the "service" section of docs/benchmarks.md
    python -m bench.service_overhead --quick    # smoke run, prints only

Targets: prediction throughput >= 70% of the no-op ceiling; enqueue -> start p50 <= 25 ms; service
overhead on training <= 5%.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from threadpoolctl import threadpool_limits

import engine
from backprop.embedded_redis import free_port
from backprop.local_stack import LocalStack, wait_until
from bench._blas_info import load_average
from bench._doc_sections import replace_section
from bench.api_calls import (
    parse_time,
    process_cpu_seconds,
    submit_job,
    train_model,
    upload_dataset,
    wait_for_job,
)
from bench.http_load import LoadResult, closed_loop, pooled
from bench.report import Target, run_description, target_table

REPO_ROOT = Path(__file__).resolve().parent.parent
SECTION = "service"
PREDICT_RATIO = 0.70
ENQUEUE_P50_MS = 25.0
TRAIN_OVERHEAD = 0.05
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Plan:
    rounds: int  # interleaved rounds per endpoint and concurrency
    round_seconds: float
    max_requests: int
    enqueue_jobs: int
    train_samples: int
    train_epochs: int
    train_pairs: int


FULL = Plan(
    rounds=5, round_seconds=4.0, max_requests=20_000, enqueue_jobs=40, train_samples=20_000, train_epochs=20,
    train_pairs=5,
)  # fmt: skip
QUICK = Plan(
    rounds=1, round_seconds=1.5, max_requests=3_000, enqueue_jobs=8, train_samples=4_000, train_epochs=2,
    train_pairs=1,
)  # fmt: skip


def log(message: str) -> None:
    print(message, flush=True)


def blobs(n_samples: int, n_features: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian class clusters: a learnable, digits-shaped (64 features, 10 classes) synthetic dataset."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, size=(n_classes, n_features))
    y = rng.integers(0, n_classes, size=n_samples)
    X = centers[y] + rng.normal(0.0, 1.5, size=(n_samples, n_features))
    return X, y


# --- (a) predictions vs no-op ------------------------------------------------------------------------------
@dataclass
class Endpoint:
    label: str
    base_url: str
    method: str
    path: str
    body: Any
    server_pid: int


@dataclass
class EndpointResult:
    label: str
    concurrency: int
    rates: list[float]
    latencies: LoadResult
    server_cpu_ms: float  # the serving process' CPU per request
    redis_cpu_us: float  # redis-server's CPU per request


def start_noop_server(stack: LocalStack, log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with (log_dir / "noop-app.log").open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.noop_app", "--port", str(port)],
            cwd=REPO_ROOT,
            env=stack.api_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the no-op app exited with {process.returncode}; see {log_dir}/noop-app.log")
        try:
            return httpx.get(f"{url}/bench/noop", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, 60, "no-op app up", interval=0.1)
    return process, url


def measure_endpoints(endpoints: list[Endpoint], concurrency: int, plan: Plan, redis_pid: int) -> list[EndpointResult]:
    """Interleaved rounds (each endpoint once per round, order rotating), after a short warm-up each."""
    for endpoint in endpoints:
        closed_loop(endpoint.base_url, endpoint.method, endpoint.path, endpoint.body,
                    concurrency=concurrency, seconds=0.5, max_requests=2_000)  # fmt: skip
    runs: dict[str, list[LoadResult]] = {e.label: [] for e in endpoints}
    cpu: dict[str, float] = {e.label: 0.0 for e in endpoints}
    redis_cpu: dict[str, float] = {e.label: 0.0 for e in endpoints}
    for index in range(plan.rounds):
        order = endpoints[index % len(endpoints) :] + endpoints[: index % len(endpoints)]
        for endpoint in order:
            server_before = process_cpu_seconds(endpoint.server_pid)
            redis_before = process_cpu_seconds(redis_pid)
            result = closed_loop(
                endpoint.base_url, endpoint.method, endpoint.path, endpoint.body,
                concurrency=concurrency, seconds=plan.round_seconds, max_requests=plan.max_requests,
            )  # fmt: skip
            cpu[endpoint.label] += process_cpu_seconds(endpoint.server_pid) - server_before
            redis_cpu[endpoint.label] += process_cpu_seconds(redis_pid) - redis_before
            runs[endpoint.label].append(result)
            log(
                f"  c={concurrency:<3} {endpoint.label:<22} {result.rate:8.0f} req/s  "
                f"p50 {result.percentile_ms(50):6.2f} ms  p99 {result.percentile_ms(99):6.2f} ms  "
                f"errors {result.errors}"
            )
    out = []
    for endpoint in endpoints:
        merged = pooled(runs[endpoint.label])
        n = max(merged.requests, 1)
        out.append(
            EndpointResult(
                endpoint.label,
                concurrency,
                [r.rate for r in runs[endpoint.label]],
                merged,
                cpu[endpoint.label] / n * 1e3,
                redis_cpu[endpoint.label] / n * 1e6,
            )
        )
    return out


def bench_predictions(
    stack: LocalStack, client: httpx.Client, plan: Plan, log_dir: Path
) -> tuple[list[EndpointResult], dict[str, Any]]:
    X, y = blobs(2_000, 64, 10, seed=1)
    model_id = train_model(client, X, y, {"hidden_layers": [64], "epochs": 5, "seed": 0})
    row = {"instances": [X[0].round(4).tolist()]}
    noop, noop_url = start_noop_server(stack, log_dir)
    try:
        api_pid = stack.child_pid("api")
        endpoints = [
            Endpoint("GET /bench/noop", noop_url, "GET", "/bench/noop", None, noop.pid),
            Endpoint("GET /bench/noop-sync", noop_url, "GET", "/bench/noop-sync", None, noop.pid),
            Endpoint("POST predict (1 row)", stack.url, "POST", f"/v1/models/{model_id}/predict", row, api_pid),
        ]
        results: list[EndpointResult] = []
        for concurrency in (1, 32):
            results += measure_endpoints(endpoints, concurrency, plan, stack.child_pid("redis"))
    finally:
        noop.terminate()
        noop.wait(30)
    info = {"model": "64-64-10 relu (trained on 2,000 synthetic rows)", "model_id": model_id}
    return results, info


# --- (b) enqueue -> start ---------------------------------------------------------------------------------
def bench_enqueue(client: httpx.Client, plan: Plan) -> dict[str, Any]:
    X, y = blobs(200, 8, 2, seed=2)
    dataset_id = upload_dataset(client, X, y, "bench-tiny")
    spec = {"dataset_id": dataset_id, "hidden_layers": [8], "epochs": 1, "seed": 0}
    waits: list[float] = []
    posts: list[float] = []
    for _ in range(plan.enqueue_jobs + 2):
        time.sleep(0.3)  # the worker is back at its dequeue, idle
        began = time.perf_counter()
        job = submit_job(client, spec)
        posts.append(time.perf_counter() - began)
        done, _ = wait_for_job(client, job["id"], timeout=60, interval=0.02)
        if done["status"] != "succeeded":
            raise RuntimeError(f"tiny job did not succeed: {done}")
        waits.append(parse_time(done["started_at"]) - parse_time(done["created_at"]))
    waits, posts = waits[2:], posts[2:]  # the first jobs warm up the worker
    ms = np.asarray(waits) * 1e3
    return {
        "n": len(waits),
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "max": float(ms.max()),
        "post_p50": float(np.percentile(np.asarray(posts) * 1e3, 50)),
    }


# --- (c) training through the service vs the engine alone ---------------------------------------------------
def bench_training(client: httpx.Client, plan: Plan, blas_threads: int) -> dict[str, Any]:
    X, y = blobs(plan.train_samples, 64, 10, seed=3)
    dataset_id = upload_dataset(client, X, y, "bench-train")
    spec: dict[str, Any] = {
        "hidden_layers": [512, 256],
        "epochs": plan.train_epochs,
        "batch_size": 64,
        "optimizer": "adam",
        "seed": 0,
    }
    config = engine.TrainConfig.from_dict(spec)
    engine_seconds: list[float] = []
    engine_epochs: list[float] = []  # sum of the engine's own per-epoch seconds
    in_service: list[float] = []  # created_at -> finished_at (queue + worker)
    in_worker: list[float] = []  # started_at -> finished_at
    worker_epochs: list[float] = []  # sum of the per-epoch seconds the job's history shows
    client_wall: list[float] = []  # POST -> poll sees succeeded
    ratios: list[float] = []  # per pair: service created->finished / engine (neighbours share the load)

    def through_engine() -> None:
        began = time.perf_counter()
        with threadpool_limits(limits=blas_threads, user_api="blas"):  # as the stack's OPENBLAS_NUM_THREADS
            result = engine.train(X, y, config)
        engine_seconds.append(time.perf_counter() - began)
        engine_epochs.append(sum(entry.seconds for entry in result.history))

    def through_service() -> None:
        began = time.monotonic()
        job = submit_job(client, {"dataset_id": dataset_id, **spec})
        # Poll gently: each poll costs the API and this process CPU that the training would miss on a
        # 2-CPU machine; the timings below come from the job record, not from the polls.
        done, seen = wait_for_job(client, job["id"], timeout=600, interval=0.25)
        if done["status"] != "succeeded":
            raise RuntimeError(f"training job did not succeed: {done}")
        client_wall.append(seen - began)
        finished = parse_time(done["finished_at"])
        in_service.append(finished - parse_time(done["created_at"]))
        in_worker.append(finished - parse_time(done["started_at"]))
        worker_epochs.append(sum(float(entry["seconds"]) for entry in done["history"]))

    for pair in range(plan.train_pairs):
        order = (through_engine, through_service) if pair % 2 == 0 else (through_service, through_engine)
        for run in order:
            run()
        ratios.append(in_service[-1] / engine_seconds[-1])
        log(
            f"  pair {pair + 1}: engine {engine_seconds[-1]:.2f} s (epochs {engine_epochs[-1]:.2f} s); "
            f"service created->finished {in_service[-1]:.2f} s, started->finished {in_worker[-1]:.2f} s "
            f"(epochs {worker_epochs[-1]:.2f} s), client {client_wall[-1]:.2f} s"
        )
    median = statistics.median
    return {
        "samples": plan.train_samples,
        "blas_threads": blas_threads,
        "spec": spec,
        "engine": median(engine_seconds),
        "engine_epochs": median(engine_epochs),
        "service": median(in_service),
        "worker": median(in_worker),
        "worker_epochs": median(worker_epochs),
        "worker_fixed": median(w - e for w, e in zip(in_worker, worker_epochs, strict=True)),
        "queue": median(s - w for s, w in zip(in_service, in_worker, strict=True)),
        "client": median(client_wall),
        "runs": plan.train_pairs,
        "ratios": ratios,
        "overhead": median(ratios) - 1.0,
        "client_overhead": median(c / e for c, e in zip(client_wall, engine_seconds, strict=True)) - 1.0,
    }


# --- report ------------------------------------------------------------------------------------------
def evaluate(predictions: list[EndpointResult], enqueue: dict[str, Any], training: dict[str, Any]) -> list[Target]:
    targets = []
    for concurrency in (1, 32):
        by_label = {r.label: r for r in predictions if r.concurrency == concurrency}
        noop = statistics.median(by_label["GET /bench/noop"].rates)
        predict = statistics.median(by_label["POST predict (1 row)"].rates)
        ratio = predict / noop if noop else 0.0
        targets.append(
            Target(
                f"prediction throughput vs no-op, concurrency {concurrency}",
                f"{ratio:.0%} ({predict:.0f} vs {noop:.0f} req/s)",
                f">= {PREDICT_RATIO:.0%}",
                ratio >= PREDICT_RATIO,
            )
        )
    targets.append(
        Target(
            "enqueue -> start p50 (idle worker)",
            f"{enqueue['p50']:.1f} ms (p90 {enqueue['p90']:.1f} ms, n={enqueue['n']})",
            f"<= {ENQUEUE_P50_MS:.0f} ms",
            enqueue["p50"] <= ENQUEUE_P50_MS,
        )
    )
    targets.append(
        Target(
            "service overhead on training",
            f"{training['overhead']:+.1%} (median of per-pair ratios; medians {training['service']:.2f} s vs "
            f"{training['engine']:.2f} s)",
            f"<= {TRAIN_OVERHEAD:.0%}",
            training["overhead"] <= TRAIN_OVERHEAD,
        )
    )
    return targets


def render(
    predictions: list[EndpointResult],
    prediction_info: dict[str, Any],
    enqueue: dict[str, Any],
    training: dict[str, Any],
    targets: list[Target],
    started: dt.datetime,
    load_before: str,
    plan: Plan,
) -> str:
    lines = ["## Service: predictions, enqueue -> start, training overhead (`bench/service_overhead.py`)", ""]
    lines += run_description(started, load_before)
    lines += [
        "- Stack: `backprop serve --host 127.0.0.1 --workers 1` on a temporary data directory (embedded "
        "Redis, one RQ worker, the API as one uvicorn process), default settings, BLAS threads "
        f"{training['blas_threads']} (see (c)); the load generator "
        "(httpx.AsyncClient, one connection per client, loopback) runs on the same 2 CPUs.",
        "",
        "### Targets",
        "",
        *target_table(targets),
        "",
        "### (a) 1-row predictions vs no-op routes of the same app",
        "",
        f"Model: {prediction_info['model']}. The no-op routes are added to `service.main.create_app()` by "
        "`bench/noop_app.py` (same middleware, error handlers and settings) and served by a second uvicorn "
        "process started like `backprop api`: `/bench/noop` is an `async def` route, `/bench/noop-sync` a "
        "plain `def` route, which Starlette runs in its thread pool as it runs the predict route. "
        f"{plan.rounds} interleaved round(s) of {plan.round_seconds:g} s per row (at most "
        f"{plan.max_requests} requests); requests/s is the median of the rounds, percentiles pool all "
        "requests. CPU per request is the serving process' (and redis-server's) user+system CPU time "
        "divided by the requests: unlike requests/s it does not depend on what else runs on the machine.",
        "",
        "| concurrency | endpoint | requests/s | p50 ms | p99 ms | errors | server CPU ms/req | Redis CPU us/req |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in predictions:
        lines.append(
            f"| {r.concurrency} | {r.label} | {statistics.median(r.rates):.0f} | "
            f"{r.latencies.percentile_ms(50):.2f} | {r.latencies.percentile_ms(99):.2f} | "
            f"{r.latencies.errors} | {r.server_cpu_ms:.2f} | {r.redis_cpu_us:.0f} |"
        )
    by_label = {r.label: r for r in predictions if r.concurrency == 32}
    noop_cpu = by_label["GET /bench/noop"].server_cpu_ms
    sync_cpu = by_label["GET /bench/noop-sync"].server_cpu_ms
    predict_cpu = by_label["POST predict (1 row)"].server_cpu_ms
    lines += [
        "",
        f"At concurrency 32 the API spends {predict_cpu:.2f} ms of CPU per prediction against "
        f"{noop_cpu:.2f} ms per async no-op request: counted in server CPU time, the prediction route "
        f"reaches {noop_cpu / predict_cpu:.0%} of the no-op ceiling. Of the difference, "
        f"{sync_cpu - noop_cpu:.2f} ms is the thread-pool hop of a plain `def` route (sync no-op minus async "
        f"no-op) and {predict_cpu - sync_cpu:.2f} ms the route's own work: parsing and validating the body, "
        "one Redis `EXISTS` (the model record and the loaded model come from the in-memory caches; Redis "
        "CPU per prediction above is one small command), the NumPy forward pass, metrics and the response "
        "model. Requests/s make the ratio look better than CPU time does because the load generator needs "
        "about one CPU of its own on this 2-CPU machine and caps the no-op rate.",
    ]
    lines += [
        "",
        "### (b) enqueue -> start on an idle worker",
        "",
        f"{enqueue['n']} one-epoch jobs on a 200 x 8 dataset, one at a time (each submitted 0.3 s after the "
        "previous one ended, so the worker waits at its dequeue); latency = the job record's `started_at` "
        "(set by the work-horse when the attempt begins) minus `created_at` (set by the API before it "
        "enqueues), both with millisecond resolution.",
        "",
        f"- p50 **{enqueue['p50']:.1f} ms**, p90 {enqueue['p90']:.1f} ms, max {enqueue['max']:.1f} ms; "
        f"`POST /v1/jobs` round trip p50 {enqueue['post_p50']:.1f} ms.",
        "",
        "### (c) the same training job through the service and through the engine alone",
        "",
        f"{training['samples']:,} x 64 synthetic rows, 10 classes; `{training['spec']}`. {training['runs']} "
        f"pairs of runs with {training['blas_threads']} BLAS thread(s) on both sides (`OPENBLAS_NUM_THREADS` "
        "for the stack, threadpoolctl in the benchmark process), `engine.train` in the benchmark process "
        "and the job through the API, alternating "
        "which goes first; the overhead is the median over pairs of (service / engine) - 1, since the two "
        "runs of a pair see about the same load from the rest of the machine. Other columns are medians.",
        "",
        "| path | seconds |",
        "|---|---:|",
        f"| `engine.train` in-process | {training['engine']:.2f} |",
        f"| ... of which its epochs (sum of `EpochMetrics.seconds`) | {training['engine_epochs']:.2f} |",
        f"| service, job `created_at` -> `finished_at` | {training['service']:.2f} |",
        f"| ... queue: `created_at` -> `started_at` | {training['queue']:.3f} |",
        f"| ... worker: `started_at` -> `finished_at` | {training['worker']:.2f} |",
        f"| ... of which epochs (sum of the job history's `seconds`) | {training['worker_epochs']:.2f} |",
        f"| ... worker time outside epochs (load data, progress, checkpoints, save model) "
        f"| {training['worker_fixed']:.2f} |",
        f"| client, POST -> poll (every 0.25 s) sees `succeeded` | {training['client']:.2f} |",
        "",
        f"Per-pair ratios service / engine: {', '.join(f'{r:.3f}' for r in training['ratios'])}; "
        f"overhead {training['overhead']:+.1%} (client-observed: {training['client_overhead']:+.1%}).",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Service benchmark -> service section of docs/benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="short smoke run; prints only")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads of the stack's processes and of the in-process engine run (default 1: on a shared "
        "machine multi-threaded OpenBLAS slows down 10x and more whenever another process wants the CPUs)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    plan = QUICK if args.quick else FULL
    started = dt.datetime.now(dt.UTC)
    load_before = load_average()
    blas_env = {name: str(args.blas_threads) for name in BLAS_THREAD_VARIABLES}
    with tempfile.TemporaryDirectory(prefix="backprop-bench-service-") as tmp:
        log_dir = Path(tmp)
        with (
            LocalStack(log_dir / "var", workers=1, env=blas_env) as stack,
            httpx.Client(base_url=stack.url, timeout=60) as client,
        ):
            log(f"stack up at {stack.url} (log {stack.log_path})")
            log("(a) predictions vs no-op")
            predictions, prediction_info = bench_predictions(stack, client, plan, log_dir)
            log("(b) enqueue -> start")
            enqueue = bench_enqueue(client, plan)
            log(f"  p50 {enqueue['p50']:.1f} ms, p90 {enqueue['p90']:.1f} ms, max {enqueue['max']:.1f} ms")
            log("(c) training: service vs engine")
            training = bench_training(client, plan, args.blas_threads)
    targets = evaluate(predictions, enqueue, training)
    for target in targets:
        log(target.line())
    text = render(predictions, prediction_info, enqueue, training, targets, started, load_before, plan)
    if args.quick or args.no_write:
        log("\n" + text)
    else:
        replace_section(args.output, SECTION, text)
        log(f"wrote the {SECTION} section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
