"""Peak memory of engine training, measured in a fresh subprocess (so nothing else's allocations count).

The child creates the big data set, records its resident set size (RSS), resets the kernel's high-water
mark (`/proc/self/clear_refs` <- 5), builds `engine.Training` and runs a few epochs, then reads the peak
(`VmHWM` in /proc/self/status). "Added by training" is that peak minus the RSS after the data was created
minus the bytes of the parameters themselves: buffers, optimizer state, index arrays, copies.

Run as `python -m bench._peak_memory --samples N --epochs E --optimizer adam [--default-config]`; prints
one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parent.parent


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _child(samples: int, epochs: int, optimizer: str, default_config: bool) -> dict[str, Any]:
    import numpy as np

    import engine
    from bench._engine_mlp import bench_config
    from bench._mlp_workloads import big_workload

    workload = big_workload(optimizer, samples)
    gc.collect()
    rss_data = _status_kib("VmRSS") * 1024
    reset = _reset_peak()
    overrides: dict[str, Any] = {}
    if default_config:
        overrides = {"validation_fraction": 0.1, "standardize": True}
    config = bench_config(workload, epochs, **overrides)
    training = engine.Training(workload.X, workload.y, config)
    setup_peak = _status_kib("VmHWM") * 1024
    for _ in range(epochs):
        training.run_epoch()
    peak = _status_kib("VmHWM") * 1024
    sizes = workload.layer_sizes
    n_params = sum(a * b + b for a, b in itertools.pairwise(sizes))
    param_bytes = n_params * np.dtype(np.float32).itemsize
    return {
        "optimizer": optimizer,
        "config": "default (validation 10%, standardize)" if default_config else "benchmark",
        "samples": samples,
        "epochs": epochs,
        "data_bytes": int(workload.X.nbytes + workload.y.nbytes),
        "param_bytes": int(param_bytes),
        "rss_after_data": rss_data,
        "setup_peak": setup_peak,
        "training_peak": peak,
        "added_by_training": peak - rss_data - param_bytes,
        "peak_was_reset": reset,
    }


def measure(samples: int, epochs: int, optimizer: str, default_config: bool = False) -> dict[str, Any]:
    """Run the child in a fresh interpreter (same environment) and return its JSON record."""
    command = [
        sys.executable,
        "-m",
        "bench._peak_memory",
        "--samples",
        str(samples),
        "--epochs",
        str(epochs),
        "--optimizer",
        optimizer,
    ]
    if default_config:
        command.append("--default-config")
    out = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    record: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--default-config", action="store_true")
    args = parser.parse_args()
    print(json.dumps(_child(args.samples, args.epochs, args.optimizer, args.default_config)))


if __name__ == "__main__":
    main()
