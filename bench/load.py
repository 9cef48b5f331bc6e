"""Load and fault benchmark against a running stack (`backprop serve --workers 2`, temp data dir, free port):

1. 32 concurrent clients predicting (1 row each) for 60 s while two training jobs run: errors, p50/p99;
2. 200 small jobs submitted in a burst to the two workers: all succeed, none lost; drain time;
3. the time from a SIGKILL to the job running again: of the work-horse alone, and (full run) of the whole
   worker with its work-horse, as when a container dies, with default heartbeat and reaper settings.

    python -m bench.load          # full run (~5 min): rewrites the "load" section of docs/benchmarks.md
    python -m bench.load --quick    # smoke run (10 s of load, 40 jobs, work-horse kill only), prints only
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from backprop.local_stack import LocalStack, wait_until
from backprop.supervisor import descendants
from bench._blas_info import load_average
from bench._doc_sections import replace_section
from bench.api_calls import (
    TERMINAL,
    read_job,
    submit_job,
    train_model,
    upload_dataset,
    wait_for_job,
)
from bench.http_load import LoadResult, closed_loop
from bench.report import Target, run_description, target_table

REPO_ROOT = Path(__file__).resolve().parent.parent
SECTION = "load"
CLIENTS = 32
RESUME_BOUND_SECONDS = 90.0  # a dead worker's job is noticed and re-queued within 90 s


@dataclass(frozen=True)
class Plan:
    predict_seconds: float
    burst_jobs: int
    kill_worker: bool  # also kill a whole worker (waits for RQ's heartbeat expiry: a minute or more)
    run_before_kill: float  # seconds a job trains before the kill (a checkpoint is due after 10 s)


FULL = Plan(predict_seconds=60.0, burst_jobs=200, kill_worker=True, run_before_kill=12.0)
QUICK = Plan(predict_seconds=10.0, burst_jobs=40, kill_worker=False, run_before_kill=12.0)


def log(message: str) -> None:
    print(message, flush=True)


def blobs(n_samples: int, n_features: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, size=(n_classes, n_features))
    y = rng.integers(0, n_classes, size=n_samples)
    X = centers[y] + rng.normal(0.0, 1.5, size=(n_samples, n_features))
    return X, y


def cancel_and_wait(client: httpx.Client, job_ids: list[str]) -> None:
    for job_id in job_ids:
        if read_job(client, job_id)["status"] not in TERMINAL:
            client.post(f"/v1/jobs/{job_id}/cancel")
    for job_id in job_ids:
        wait_for_job(client, job_id, timeout=120, interval=0.2)


def wait_running(client: httpx.Client, job_id: str, seconds: float, min_epoch: int = 0) -> dict[str, Any]:
    """Wait until the job has been running `seconds` (wall, from now) and reports `min_epoch` or more."""
    job: dict[str, Any] = {}
    since: float | None = None

    def ready() -> bool:
        nonlocal job, since
        job = read_job(client, job_id)
        if job["status"] in TERMINAL:
            raise RuntimeError(f"job ended before the measurement: {job}")
        if job["status"] != "running":
            return False
        since = since if since is not None else time.monotonic()
        epoch = int((job.get("progress") or {}).get("epoch") or 0)
        return time.monotonic() - since >= seconds and epoch >= min_epoch

    wait_until(ready, 300, f"job {job_id} running", interval=0.1)
    return job


# --- 1. predictions under training ---------------------------------------------------------------------------
def bench_predict_under_training(stack: LocalStack, client: httpx.Client, plan: Plan) -> dict[str, Any]:
    X, y = blobs(2_000, 64, 10, seed=1)
    model_id = train_model(client, X, y, {"hidden_layers": [64], "epochs": 5, "seed": 0})
    X_big, y_big = blobs(20_000, 64, 10, seed=4)
    dataset_id = upload_dataset(client, X_big, y_big, "bench-background")
    spec = {"dataset_id": dataset_id, "hidden_layers": [256, 256], "epochs": 1000, "batch_size": 64}
    jobs = [submit_job(client, {**spec, "seed": seed})["id"] for seed in (1, 2)]
    for job_id in jobs:
        wait_running(client, job_id, 0.0)
    log(f"  two training jobs running; {CLIENTS} clients predicting for {plan.predict_seconds:g} s")
    row = {"instances": [X[0].round(4).tolist()]}
    result: LoadResult = closed_loop(
        stack.url,
        "POST",
        f"/v1/models/{model_id}/predict",
        row,
        concurrency=CLIENTS,
        seconds=plan.predict_seconds,
        max_requests=10_000_000,
    )
    states = [read_job(client, job_id) for job_id in jobs]
    still_running = sum(job["status"] == "running" for job in states)
    epochs = [int((job.get("progress") or {}).get("epoch") or 0) for job in states]
    cancel_and_wait(client, jobs)
    return {
        "result": result,
        "still_running": still_running,
        "epochs": epochs,
        "background": "20,000 x 64 rows, hidden [256, 256], batch 64, adam",
    }


# --- 2. a burst of jobs ------------------------------------------------------------------------------------
async def _submit_all(base_url: str, spec: dict[str, Any], count: int) -> tuple[list[str], list[str], float]:
    """POST `count` jobs, 32 at a time; (job ids, errors, seconds)."""
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    ids: list[str] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(CLIENTS)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:

        async def one() -> None:
            async with gate:
                try:
                    response = await client.post("/v1/jobs", json=spec)
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                if response.status_code == 202:
                    ids.append(str(response.json()["id"]))
                else:
                    errors.append(f"{response.status_code}: {response.text[:200]}")

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return ids, errors, time.perf_counter() - began


def bench_burst(stack: LocalStack, client: httpx.Client, plan: Plan) -> dict[str, Any]:
    X, y = blobs(100, 4, 2, seed=5)
    dataset_id = upload_dataset(client, X, y, "bench-burst")
    spec = {"dataset_id": dataset_id, "hidden_layers": [4], "epochs": 2, "seed": 0}
    began = time.monotonic()
    ids, errors, submit_seconds = asyncio.run(_submit_all(stack.url, spec, plan.burst_jobs))
    log(f"  {len(ids)} jobs accepted in {submit_seconds:.2f} s ({len(errors)} refused)")
    statuses: Counter[str] = Counter()

    def drained() -> bool:
        nonlocal statuses
        listing = client.get("/v1/jobs", params={"limit": 500}).json()
        by_id = {job["id"]: job["status"] for job in listing["items"]}
        statuses = Counter(by_id.get(job_id, "missing") for job_id in ids)
        return all(status in TERMINAL for status in statuses.elements())

    wait_until(drained, 900, "the burst drained", interval=0.5)
    drain_seconds = time.monotonic() - began
    jobs = [read_job(client, job_id) for job_id in ids]
    succeeded = [job for job in jobs if job["status"] == "succeeded" and job["model_id"]]
    models = {job["model_id"] for job in succeeded}
    return {
        "submitted": plan.burst_jobs,
        "accepted": len(ids),
        "refused": errors[:3],
        "n_refused": len(errors),
        "submit_seconds": submit_seconds,
        "drain_seconds": drain_seconds,
        "succeeded": len(succeeded),
        "distinct_models": len(models),
        "statuses": dict(Counter(job["status"] for job in jobs)),
        "attempts": dict(Counter(int(job["attempts"]) for job in jobs)),
    }


# --- 3. kill -> resume ------------------------------------------------------------------------------------
def busy_worker(stack: LocalStack) -> tuple[str, int, list[int]]:
    """The worker child of serve that runs a job: (name, pid, its descendants = the work-horse)."""
    busy = [(name, pid, descendants(pid)) for name, pid in stack.worker_pids().items() if descendants(pid)]
    if len(busy) != 1:
        raise RuntimeError(f"expected one busy worker, found {busy}")
    return busy[0]


def measure_kill(
    stack: LocalStack, client: httpx.Client, dataset_id: str, whole_worker: bool, plan: Plan
) -> dict[str, Any]:
    spec = {"dataset_id": dataset_id, "hidden_layers": [256, 256], "epochs": 2000, "batch_size": 16, "seed": 3}
    job_id = submit_job(client, spec)["id"]
    before = wait_running(client, job_id, plan.run_before_kill, min_epoch=2)
    name, worker_pid, horse = busy_worker(stack)
    victims = [worker_pid, *horse] if whole_worker else horse
    attempts_before = int(before["attempts"])
    killed = time.monotonic()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    history_at_kill = read_job(client, job_id)["history"]  # the killed attempt writes nothing more
    epoch_at_kill = len(history_at_kill)
    seen: dict[str, float] = {}
    resumed_job: dict[str, Any] = {}

    def resumed() -> bool:
        nonlocal resumed_job
        job = read_job(client, job_id)
        now = time.monotonic() - killed
        if job["status"] != "running":
            seen.setdefault(job["status"], now)
        if job["status"] in TERMINAL:
            raise RuntimeError(f"the killed job ended instead of resuming: {job}")
        if job["status"] == "running" and int(job["attempts"]) > attempts_before:
            seen["running again"] = now
            resumed_job = job
            return True
        return False

    wait_until(resumed, 300, f"job {job_id} resumed", interval=0.02)
    # The new attempt rewrites the history to its checkpoint's epoch, then adds epochs from there.
    first_epoch: int | None = None

    def progressed() -> bool:
        nonlocal first_epoch
        history = read_job(client, job_id)["history"]
        if history and history[-1] != history_at_kill[-1]:
            first_epoch = int(history[-1]["epoch"])
            return True
        return False

    wait_until(progressed, 120, "the resumed attempt reported an epoch", interval=0.05)
    cancel_and_wait(client, [job_id])
    return {
        "what": "worker + work-horse" if whole_worker else "work-horse only",
        "worker": name,
        "epoch_at_kill": epoch_at_kill,
        "first_epoch_after": first_epoch,
        "seen": seen,
        "resume_seconds": seen["running again"],
        "attempts": int(resumed_job["attempts"]),
    }


def bench_kills(stack: LocalStack, client: httpx.Client, plan: Plan) -> list[dict[str, Any]]:
    X, y = blobs(3_000, 20, 3, seed=6)
    dataset_id = upload_dataset(client, X, y, "bench-kill")
    results = [measure_kill(stack, client, dataset_id, whole_worker=False, plan=plan)]
    log(f"  work-horse kill -> running again in {results[-1]['resume_seconds']:.2f} s")
    if plan.kill_worker:
        wait_until(lambda: len(stack.worker_pids()) == stack.workers, 30, "both workers up")
        results.append(measure_kill(stack, client, dataset_id, whole_worker=True, plan=plan))
        log(f"  worker kill -> running again in {results[-1]['resume_seconds']:.2f} s")
    return results


# --- report ------------------------------------------------------------------------------------------------
def evaluate(predict: dict[str, Any], burst: dict[str, Any], kills: list[dict[str, Any]]) -> list[Target]:
    result: LoadResult = predict["result"]
    targets = [
        Target(
            f"{CLIENTS} clients predicting while 2 jobs train: errors",
            f"{result.errors} of {result.requests} (p50 {result.percentile_ms(50):.1f} ms, "
            f"p99 {result.percentile_ms(99):.1f} ms)",
            "0",
            result.errors == 0 and result.requests > 0,
        ),
        Target(
            f"burst of {burst['submitted']} jobs: all succeed, none lost",
            f"{burst['succeeded']} succeeded, {burst['n_refused']} refused, statuses {burst['statuses']}",
            f"{burst['submitted']} succeeded",
            burst["succeeded"] == burst["submitted"] and burst["distinct_models"] == burst["submitted"],
        ),
    ]
    for kill in kills:
        targets.append(
            Target(
                f"SIGKILL ({kill['what']}) -> job running again",
                f"{kill['resume_seconds']:.1f} s, resumed at epoch {kill['first_epoch_after']} "
                f"(killed at {kill['epoch_at_kill']})",
                f"<= {RESUME_BOUND_SECONDS:.0f} s, not from epoch 0",
                kill["resume_seconds"] <= RESUME_BOUND_SECONDS and (kill["first_epoch_after"] or 0) > 1,
            )
        )
    return targets


def render(
    predict: dict[str, Any],
    burst: dict[str, Any],
    kills: list[dict[str, Any]],
    targets: list[Target],
    started: dt.datetime,
    load_before: str,
    plan: Plan,
    settings: dict[str, str],
) -> str:
    result: LoadResult = predict["result"]
    lines = ["## Load and faults (`bench/load.py`)", ""]
    lines += run_description(started, load_before)
    lines += [
        "- Stack: `backprop serve --host 127.0.0.1 --workers 2` on a temporary data directory, default "
        "settings except " + ", ".join(f"`{k}={v}`" for k, v in settings.items()) + ".",
        "",
        "### Targets",
        "",
        *target_table(targets),
        "",
        f"### Predictions while two jobs train ({plan.predict_seconds:g} s, {CLIENTS} clients)",
        "",
        f"Each client is an httpx.AsyncClient with one keep-alive connection sending 1-row predictions to a "
        f"64-64-10 model back to back, while both workers train ({predict['background']}).",
        "",
        f"- {result.requests} requests, {result.errors} errors, {result.rate:.0f} requests/s; latency p50 "
        f"{result.percentile_ms(50):.1f} ms, p99 {result.percentile_ms(99):.1f} ms, max "
        f"{max(result.latencies, default=0.0) * 1e3:.0f} ms.",
        f"- Training went on: {predict['still_running']} of 2 jobs still running at the end, at epochs "
        f"{predict['epochs']} (then canceled).",
    ]
    if result.error_samples:
        lines.append(f"- First errors: {result.error_samples}")
    lines += [
        "",
        f"### A burst of {burst['submitted']} jobs on two workers",
        "",
        f"Jobs of 2 epochs on a 100 x 4 dataset, hidden [4], POSTed {CLIENTS} at a time.",
        "",
        f"- Accepted {burst['accepted']} in {burst['submit_seconds']:.2f} s "
        f"({burst['accepted'] / burst['submit_seconds']:.0f} submissions/s); refused {burst['n_refused']}"
        + (f" (first: {burst['refused']})" if burst["refused"] else "")
        + ".",
        f"- All ended after {burst['drain_seconds']:.1f} s "
        f"({burst['submitted'] / burst['drain_seconds']:.1f} jobs/s); statuses {burst['statuses']}, "
        f"{burst['distinct_models']} distinct models, attempts per job {burst['attempts']}.",
        "",
        "### SIGKILL -> job running again",
        "",
        "A job (3,000 x 20, hidden [256, 256], batch 16) trains for "
        f"{plan.run_before_kill:g} s (so a checkpoint is due, default `checkpoint_seconds` 10), then the "
        "work-horse running it is SIGKILLed, or the whole worker child of `backprop serve` with its "
        "work-horse (as when a container dies; serve restarts the worker). The job is polled every 20 ms; "
        "times are from the kill. *Running again* is the first poll that shows the job `running` with one "
        "more attempt; *first epoch after* is the first epoch the new attempt reported, i.e. its "
        "checkpoint's epoch + 1 (1 would mean it started over). After a work-horse kill RQ's "
        "work-horse-killed handler re-queues the job at once; after a whole-worker kill nothing notices "
        "until the API's reaper (every `reaper_interval`, 15 s) sees the worker's heartbeat gone (`stalled`) "
        "and, once the job's heartbeat TTL in RQ's started-job registry (about a minute) has run out, the "
        "registry cleanup it runs re-queues the job.",
        "",
        "| killed | status changes seen (s after the kill) | running again | epoch at kill | first epoch after |",
        "|---|---|---:|---:|---:|",
    ]
    for kill in kills:
        changes = ", ".join(f"{status} {seconds:.2f}" for status, seconds in kill["seen"].items())
        lines.append(
            f"| {kill['what']} | {changes} | {kill['resume_seconds']:.2f} s | {kill['epoch_at_kill']} | "
            f"{kill['first_epoch_after']} |"
        )
    if not plan.kill_worker:
        lines += ["", "(Quick run: the whole-worker kill was not measured.)"]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Load benchmark -> load section of docs/benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="short smoke run; prints only")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    plan = QUICK if args.quick else FULL
    started = dt.datetime.now(dt.UTC)
    load_before = load_average()
    # The default of 100 queued jobs per key (429 above) would refuse half of the burst.
    settings = {"BACKPROP_MAX_QUEUED_JOBS_PER_KEY": "1000"}
    with tempfile.TemporaryDirectory(prefix="backprop-bench-load-") as tmp:
        stack = LocalStack(Path(tmp) / "var", workers=2, env=settings)
        with stack, httpx.Client(base_url=stack.url, timeout=60) as client:
            log(f"stack up at {stack.url} (log {stack.log_path})")
            log("1. predictions while two jobs train")
            predict = bench_predict_under_training(stack, client, plan)
            log("2. burst of jobs")
            burst = bench_burst(stack, client, plan)
            log("3. kill -> resume")
            kills = bench_kills(stack, client, plan)
    targets = evaluate(predict, burst, kills)
    for target in targets:
        log(target.line())
    text = render(predict, burst, kills, targets, started, load_before, plan, settings)
    if args.quick or args.no_write:
        log("\n" + text)
    else:
        replace_section(args.output, SECTION, text)
        log(f"wrote the {SECTION} section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
