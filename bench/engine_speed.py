"""Engine benchmark: engine vs PyTorch (CPU) vs scikit-learn vs the GEMM floor -> docs/benchmarks.md.

    python -m bench.engine_speed            # full run (~5 min on 2 cores), rewrites the "Engine" section
    python -m bench.engine_speed --quick    # smoke run on small data, prints only

(from the repository root, like the other benchmarks).

In one process, on the same data and the same number of threads, every contender runs one epoch per round,
rounds interleaved (rotating order), after a warm-up round; the median epoch time is reported. Workloads:

* big: 784-256-128-10 relu, float32, batch 128, 60,000 synthetic MNIST-shaped samples, momentum
  (lr 0.05, 0.9) and adam (lr 1e-3);
* small: 64-32-10 relu, scikit-learn's digits (1,797 x 64), batch 32, momentum and adam.

The environment here sets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for old OpenBLAS builds; they pin NumPy's
current OpenBLAS to an older kernel. Unless `--keep-openblas-env` is given, the script re-runs itself once
without both (they are read when OpenBLAS loads) and reports which kernel then runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bench import _blas_info, _engine_section, _mlp_workloads
from bench._doc_sections import replace_section
from bench._engine_mlp import EngineMLP
from bench._epoch_timing import time_interleaved
from bench._gemm_floor import GemmFloor
from bench._peak_memory import measure
from bench.report import command_line

REPO_ROOT = Path(__file__).resolve().parent.parent
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SECTION = "engine"


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Engine benchmark -> Engine section of docs/benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="small data, few epochs; prints only")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--threads", type=int, default=None, help="BLAS and torch threads (default: NumPy's)")
    parser.add_argument("--big-rounds", type=int, default=None, help="measured epochs per big workload (9)")
    parser.add_argument("--small-rounds", type=int, default=None, help="rounds of 5 small epochs (10)")
    parser.add_argument(
        "--keep-openblas-env",
        action="store_true",
        help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE as set (benchmarks the pinned kernel)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocess")
    parser.add_argument(
        "--wait-for-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the 1-minute load average to drop below 0.5",
    )
    return parser.parse_args(argv)


def _reexec_without_openblas_overrides(args: argparse.Namespace) -> None:
    """OpenBLAS reads these when it loads, so they can only be dropped by starting a new interpreter."""
    if args.keep_openblas_env or not any(name in os.environ for name in OPENBLAS_OVERRIDES):
        return
    env = {key: value for key, value in os.environ.items() if key not in OPENBLAS_OVERRIDES}
    env["BENCH_ENGINE_DROPPED_OPENBLAS_ENV"] = " ".join(
        f"{name}={os.environ[name]}" for name in OPENBLAS_OVERRIDES if name in os.environ
    )
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "bench.engine_speed", *sys.argv[1:]], env)


def _log(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    _reexec_without_openblas_overrides(args)
    run(args)
    return 0


def run(args: argparse.Namespace) -> None:
    """Measure everything, print the report, and (full runs) rewrite the Engine section."""
    try:
        from bench._sklearn_mlp import SklearnMLP, sklearn_version
        from bench._torch_mlp import TorchMLP, set_torch_threads, torch_blas, torch_version
    except ModuleNotFoundError as exc:
        raise SystemExit(
            f"bench.engine_speed needs the bench extra ({exc.name} is missing): "
            ".venv/bin/pip install -c constraints.txt -e '.[bench]'  (torch==2.13.0, a local CPU wheel here)"
        ) from None

    _wait_for_quiet(args.wait_for_quiet)
    started = now_utc()
    load_before = _blas_info.load_average()
    blas = _blas_info.numpy_blas()
    threads = args.threads or int(blas.get("num_threads", 1))
    limits = threadpool_limits(limits=threads, user_api="blas") if args.threads else None
    set_torch_threads(threads)
    blas = _blas_info.numpy_blas()
    big_samples = _mlp_workloads.QUICK_BIG_SAMPLES if args.quick else _mlp_workloads.BIG_SAMPLES
    big_rounds = args.big_rounds or (2 if args.quick else 9)
    small_rounds = args.small_rounds or (2 if args.quick else 10)
    small_per_turn = 5

    env = _engine_section.Environment(
        date=started,
        command=command_line(),
        cpu=_blas_info.cpu_model(),
        load_before=load_before,
        load_after="",
        numpy=np.__version__,
        torch=torch_version(),
        sklearn=sklearn_version(),
        python=sys.version.split()[0],
        numpy_blas=_blas_info.describe_blas(blas),
        torch_blas=torch_blas(),
        threads=threads,
        dropped_env=dropped_env(),
        kept_env=" ".join(f"{k}={os.environ[k]}" for k in OPENBLAS_OVERRIDES if k in os.environ),
    )
    _log(f"{started}: {env.cpu}; load {load_before}")
    _log(f"NumPy {env.numpy} BLAS: {env.numpy_blas}")
    _log(f"PyTorch {env.torch}: {env.torch_blas}; {threads} threads; scikit-learn {env.sklearn}")
    if env.dropped_env:
        _log(f"(re-ran without {env.dropped_env})")

    cases: list[_engine_section.CaseResult] = []
    big = _mlp_workloads.big_workload("momentum", big_samples)
    small = _mlp_workloads.small_workload("momentum")
    plan = [
        (big, big_rounds, 1),
        (big.with_optimizer("adam"), big_rounds, 1),
        (small, small_rounds, small_per_turn),
        (small.with_optimizer("adam"), small_rounds, small_per_turn),
    ]
    for workload, rounds, per_turn in plan:
        total_epochs = (rounds + 1) * per_turn + 1
        contenders: dict[str, Any] = {
            "engine": EngineMLP(workload, total_epochs),
            "pytorch": TorchMLP(workload),
            "scikit-learn": SklearnMLP(workload),
            "GEMM floor": GemmFloor(workload),
        }
        _log(
            f"{workload.name}: {workload.n_samples} x {workload.layer_sizes}, batch {workload.batch_size}, "
            f"{rounds} rounds x {per_turn} epochs after 1 warm-up round"
        )
        times = time_interleaved(
            {name: c.run_epoch for name, c in contenders.items()},
            workload.n_samples,
            rounds,
            warmup=1,
            epochs_per_turn=per_turn,
            log=_log if per_turn == 1 else None,
        )
        quality = {name: c.evaluate() for name, c in contenders.items() if name != "GEMM floor"}
        case = _engine_section.CaseResult(
            workload.name, workload.n_samples, workload.layer_sizes, workload.batch_size, times, quality
        )
        cases.append(case)
        for line in _engine_section.case_lines(case):
            _log("  " + line)

    memory: list[dict[str, Any]] = []
    if not args.no_memory:
        _log("peak memory (fresh subprocesses)...")
        for optimizer, default_config in (("momentum", False), ("adam", False), ("adam", True)):
            record = measure(big_samples, 2, optimizer, default_config)
            memory.append(record)
            _log("  " + _engine_section.memory_line(record))

    env.load_after = _blas_info.load_average()
    if limits is not None:
        limits.restore_original_limits()
    targets = _engine_section.evaluate_targets(cases, memory)
    noisy = _engine_section.noisy_cases(cases)
    if noisy:
        _log(f"NOISY: epoch times of {', '.join(noisy)} vary (IQR > 20% of the median): other load on the machine?")
    _log("targets:")
    for target in targets:
        _log(f"  {target.verdict:4s} {target.name}: {target.measured}")
    _log(f"load average after: {env.load_after}")
    body = _engine_section.render(env, cases, targets, memory, quick=args.quick)
    if args.quick and args.output == REPO_ROOT / "docs" / "benchmarks.md":
        _log("--quick: docs/benchmarks.md not written (pass --output PATH to write a quick run somewhere)")
    elif args.no_write:
        _log("--no-write: docs/benchmarks.md not written")
    else:
        replace_section(args.output, SECTION, body)
        _log(f"wrote the {SECTION} section of {args.output}")


def _wait_for_quiet(seconds: float, threshold: float = 0.5) -> None:
    """Other processes on a 2-core machine distort BLAS timings badly: optionally wait them out."""
    deadline = time.monotonic() + seconds
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        time.sleep(5)


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def dropped_env() -> str:
    return os.environ.get("BENCH_ENGINE_DROPPED_OPENBLAS_ENV", "")


if __name__ == "__main__":
    raise SystemExit(main())
