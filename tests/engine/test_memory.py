"""The memory estimate of a training run against the peak resident memory of real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import TrainConfig, estimate_memory

# Trains like a worker does (load, Training, epochs, a checkpoint, the result and its bytes) in a fresh
# process, and prints its peak resident memory above what it held once imports and the data were in.
_PROBE = """
import json, sys
import numpy as np
import engine

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)

spec = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
X = rng.standard_normal((spec["n_samples"], spec["n_features"]), dtype=np.dtype(spec["input_dtype"]))
y = rng.integers(0, spec["n_classes"], spec["n_samples"])
y[: spec["n_classes"]] = np.arange(spec["n_classes"])
config = engine.TrainConfig.from_dict(spec["config"])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak so far (imports, drawing the data) is forgotten
baseline = status("VmRSS")
run = engine.Training(X, y, config)
run.run_epoch()
state = run.state_bytes()
del state
while not run.finished:
    run.run_epoch()
data = engine.dumps(run.result().model)
print(json.dumps({"peak": status("VmHWM") - baseline}))
"""

_CASES = {
    "float32-adam-wide-batch": dict(
        n_samples=40_000,
        n_features=200,
        n_classes=10,
        input_dtype="float32",
        config=dict(hidden_layers=[256, 256], batch_size=40_000, epochs=2, dtype="float32", optimizer="adam"),
    ),
    "float64-sgd-partial-batches": dict(
        n_samples=5_000,
        n_features=100,
        n_classes=5,
        input_dtype="float64",
        config=dict(hidden_layers=[1500, 1500], batch_size=2048, epochs=1, dtype="float64", optimizer="sgd"),
    ),
    "float64-adam-many-parameters": dict(
        n_samples=600,
        n_features=1000,
        n_classes=10,
        input_dtype="float64",
        config=dict(hidden_layers=[2000, 2000], batch_size=128, epochs=2, dtype="float64", early_stopping=True),
    ),
    "float32-momentum-from-float64": dict(
        n_samples=60_000,
        n_features=500,
        n_classes=3,
        input_dtype="float64",
        config=dict(hidden_layers=[512], batch_size=8192, epochs=1, dtype="float32", optimizer="momentum"),
    ),
}


def _measured_peak(spec: dict[str, object]) -> int:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout.strip().splitlines()[-1])["peak"])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak RSS")
@pytest.mark.parametrize("case", sorted(_CASES))
def test_estimate_memory_matches_peak_rss(case: str) -> None:
    spec = _CASES[case]
    config = TrainConfig.from_dict(spec["config"])  # type: ignore[arg-type]
    estimate = estimate_memory(
        config,
        int(spec["n_samples"]),  # type: ignore[call-overload]
        int(spec["n_features"]),  # type: ignore[call-overload]
        int(spec["n_classes"]),  # type: ignore[call-overload]
        input_dtype=np.dtype(str(spec["input_dtype"])),
    )
    expected = estimate.total - estimate.dataset
    measured = _measured_peak(spec)
    assert expected > 100 * 2**20  # large enough that the process' own noise does not matter
    assert abs(measured - expected) <= 0.25 * measured, (measured / 2**20, expected / 2**20)
