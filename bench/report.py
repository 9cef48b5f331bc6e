"""The parts of a service benchmark's section of docs/benchmarks.md: what ran where (machine, date, load,
versions, command) and each target with PASS or MISS."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys
from dataclasses import dataclass
from importlib import metadata

from bench._blas_info import cpu_model, load_average

PACKAGES = ("numpy", "fastapi", "starlette", "uvicorn", "pydantic", "redis", "rq", "httpx")


@dataclass(frozen=True)
class Target:
    """A target from the issue and what was measured against it."""

    name: str
    measured: str
    bound: str
    met: bool

    @property
    def verdict(self) -> str:
        return "PASS" if self.met else "MISS"

    def line(self) -> str:
        return f"{self.verdict}  {self.name}: {self.measured} (target {self.bound})"


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return f"Python {platform.python_version()}, " + ", ".join(found)


def command_line() -> str:
    """The command that ran this benchmark, as typed from the repository root."""
    return shlex.join([os.path.relpath(sys.executable), *sys.orig_argv[1:]])


def run_description(started: dt.datetime, load_before: str) -> list[str]:
    """Markdown lines: machine, date, load average before and after, versions, command."""
    return [
        f"- Machine: {cpu_model()}; {os.cpu_count()} logical CPUs, shared with other jobs.",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}; load average (1/5/15 min) "
        f"{load_before} before, {load_average()} after.",
        f"- Versions: {versions()}.",
        f"- Command: `{command_line()}`",
    ]


def target_table(targets: list[Target]) -> list[str]:
    lines = ["| target | measured | bound | result |", "|---|---|---|---|"]
    lines += [f"| {t.name} | {t.measured} | {t.bound} | **{t.verdict}** |" for t in targets]
    return lines
