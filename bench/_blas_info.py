"""What the benchmark ran on: BLAS library and kernel (threadpoolctl), CPU, versions."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info


def numpy_blas() -> dict[str, Any]:
    """threadpoolctl's record of the BLAS that NumPy loaded (internal_api, version, architecture, threads)."""
    np_dir = os.path.dirname(np.__file__)
    site = os.path.dirname(np_dir)
    candidates = [info for info in threadpool_info() if info.get("user_api") == "blas"]
    # numpy's own copy lives in numpy.libs/ (wheels) or is linked from numpy/ itself.
    for info in candidates:
        path = str(info.get("filepath", ""))
        if path.startswith(os.path.join(site, "numpy")):
            return dict(info)
    return dict(candidates[0]) if candidates else {}


def describe_blas(info: dict[str, Any]) -> str:
    kernel = info.get("architecture") or info.get("corename") or "unknown kernel"
    return (
        f"{info.get('internal_api', '?')} {info.get('version', '?')}, kernel {kernel}, "
        f"{info.get('num_threads', '?')} threads ({info.get('threading_layer', '?')})"
    )


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict((key.strip(), value.strip()) for key, _, value in (line.partition(":") for line in out.splitlines()))
    model = fields.get("Model name", "unknown CPU")
    cores = fields.get("CPU(s)", "?")
    family = fields.get("CPU family", "?")
    l2 = fields.get("L2 cache", "?")
    return f"{model} (family {family}), {cores} CPUs, L2 {l2}"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
