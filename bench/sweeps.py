"""Sweep benchmark: 24 small jobs (digits, hidden [32], 30 epochs: 8 trials x 3 seeds) on `backprop serve`
with one worker and with two, the workers' BLAS threads pinned (max(1, cores // workers), the default) or not
(every worker with all the cores' threads, BLAS' own default).

Wall time = from just before `POST /v1/sweeps` until the sweep's recorded `finished_at` (every child ended,
result frozen); the client polls at its default interval, which is not part of the time. Each stack is
started (and ready) before the clock starts. The target: two pinned workers take at most 0.6x the time of
one worker.

    python -m bench.sweeps            # full run: rewrites the "sweeps" section of docs/benchmarks.md
    python -m bench.sweeps --quick    # smoke run (one repeat, 10 epochs), prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sklearn.datasets import load_digits

from backprop import Client
from backprop.local_stack import LocalStack
from bench._blas_info import load_average
from bench._doc_sections import replace_section
from bench.report import Target, run_description, target_table

REPO_ROOT = Path(__file__).resolve().parent.parent
SECTION = "sweeps"
RATIO_BOUND = 0.6
GRID: dict[str, list[Any]] = {"learning_rate": [0.003, 0.001, 0.0003, 0.0001], "batch_size": [32, 64]}
SEEDS = [0, 1, 2]


@dataclass(frozen=True)
class Setup:
    label: str
    workers: int
    blas_threads: int  # 0: the default rule, max(1, cores // workers)


@dataclass(frozen=True)
class Run:
    setup: Setup
    seconds: list[float]
    threads_used: set[int]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def setups() -> list[Setup]:
    cores = _cores()
    return [
        Setup("1 worker", 1, 0),
        Setup("2 workers, pinned", 2, 0),
        Setup("2 workers, unpinned", 2, cores),
    ]


def _sweep_once(client: Client, dataset_id: str, epochs: int) -> tuple[float, set[int]]:
    started = time.time()
    sweep = client.sweep(
        dataset_id, grid=GRID, seeds=SEEDS, base={"hidden_layers": [32], "epochs": epochs}, metric="validation_loss"
    )
    sweep.wait(progress=False, timeout=1800)  # the client's default polling, as a user's
    if sweep.status != "succeeded":
        raise RuntimeError(f"sweep {sweep.id} ended {sweep.status}: {sweep.data.get('counts')}")
    # The end is the sweep's own finished_at (same machine, same clock), not when the next poll saw it.
    seconds = dt.datetime.fromisoformat(sweep.data["finished_at"]).timestamp() - started
    threads = {int(job.data["blas_threads"]) for job in client.jobs() if job.data.get("sweep_id") == sweep.id}
    return seconds, threads


def measure(setup: Setup, epochs: int) -> tuple[float, set[int]]:
    """One sweep on a fresh stack of `setup` (started and ready before the clock starts)."""
    env = {"BACKPROP_BLAS_THREADS": str(setup.blas_threads)} if setup.blas_threads else {}
    X, y = load_digits(return_X_y=True)
    with LocalStack(workers=setup.workers, env=env) as stack, Client(stack.url, timeout=60) as client:
        dataset = client.upload_dataset((X, y), name="digits")
        elapsed, used = _sweep_once(client, dataset.id, epochs)
    print(f"{setup.label}: {elapsed:.1f} s (BLAS threads {sorted(used)})", flush=True)
    return elapsed, used


def measure_all(repeats: int, epochs: int) -> list[Run]:
    """Every setup `repeats` times, interleaved (1, 2 pinned, 2 unpinned, 1, ...): a change in the machine's
    load during the benchmark hits every setup alike."""
    results: dict[Setup, tuple[list[float], set[int]]] = {setup: ([], set()) for setup in setups()}
    for _ in range(repeats):
        for setup, (seconds, threads) in results.items():
            elapsed, used = measure(setup, epochs)
            seconds.append(elapsed)
            threads |= used
    return [Run(setup, seconds, threads) for setup, (seconds, threads) in results.items()]


def section(runs: list[Run], started: dt.datetime, load: str, repeats: int, epochs: int) -> str:
    one = runs[0].median
    pinned = next(run for run in runs if run.setup.label == "2 workers, pinned")
    ratio = pinned.median / one
    targets = [
        Target("sweep wall time, 2 pinned workers / 1 worker", f"{ratio:.2f}x ({pinned.median:.1f} s / {one:.1f} s)",
               f"<= {RATIO_BOUND}x", ratio <= RATIO_BOUND),
    ]
    lines = ["## Sweeps on one and two workers (`bench/sweeps.py`)", ""]
    lines += run_description(started, load)
    lines += [
        f"- Sweep: digits (1,797 x 64, sklearn), `hidden_layers` [32], {epochs} epochs, grid {GRID} x seeds "
        f"{SEEDS} = 24 jobs; `backprop serve --workers N` on a temporary data directory; wall time from "
        f"`POST /v1/sweeps` to the sweep's recorded `finished_at` (the client polls at its default 1 s), on a "
        f"fresh stack per run; {repeats} run(s) per setup, the setups interleaved; the target compares medians.",
        "",
        "### Targets",
        "",
        *target_table(targets),
        "",
        "### Measurements",
        "",
        "| setup | BLAS threads per worker | runs (s) | median | vs 1 worker | fastest | vs 1 worker |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        times = ", ".join(f"{value:.1f}" for value in run.seconds)
        threads = ", ".join(str(value) for value in sorted(run.threads_used))
        fastest, one_fastest = min(run.seconds), min(runs[0].seconds)
        lines.append(
            f"| {run.setup.label} | {threads} | {times} | {run.median:.1f} s | {run.median / one:.2f}x "
            f"| {fastest:.1f} s | {fastest / one_fastest:.2f}x |"
        )
    lines += [
        "",
        "The machine is shared (see the load average): other engineers' tests and benchmarks run on the same two "
        "cores, so the same setup's runs differ by up to 2x and a 24-job sweep measures the machine's load as much "
        "as the workers. With one worker, pinned and unpinned are the same setting (all the cores for the one "
        "worker).",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Sweep benchmark -> sweeps section of docs/benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="one repeat of 10-epoch jobs; print only")
    parser.add_argument("--repeats", type=int, default=5, help="sweeps per setup (default 5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    repeats, epochs = (1, 10) if args.quick else (args.repeats, 30)
    started = dt.datetime.now(dt.UTC)
    load = load_average()
    runs = measure_all(repeats, epochs)
    text = section(runs, started, load, repeats, epochs)
    print(text)
    if not args.quick:
        replace_section(REPO_ROOT / "docs" / "benchmarks.md", SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

