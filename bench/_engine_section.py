"""The engine benchmark's results, its targets, and the markdown of its docs/benchmarks.md section."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench._epoch_timing import EpochTimes

MIB = 1024 * 1024
ENGINE = "engine"


METHOD = [
    "- One process; all contenders train on the same arrays with the same number of threads. Each",
    "  round runs one epoch of every contender (small: five epochs per turn), in an order that rotates",
    "  from round to round, after one warm-up round; the tables show the median epoch. Before each",
    "  turn the script sleeps 0.2 s: OpenBLAS' and PyTorch's OpenMP threads busy-wait after their last",
    "  call, and without the pause the next contender shares the cores with them (measured here: up",
    "  to 10x slower for its first ~100 ms).",
    "- Data: big = 28x28 pixels, about 20% lit, uint8 values scaled to [0, 1], labels from a random",
    "  linear teacher plus noise (so the loss falls as on real data); small = scikit-learn's digits / 16.",
    "- **engine**: `engine.Training(X, y, TrainConfig(..., validation_fraction=0.0,",
    "  standardize=False, l2=0.0))`, one `run_epoch()` per epoch (shuffle and training loss/accuracy",
    "  bookkeeping included).",
    "- **pytorch**: `nn.Sequential` of `Linear`/`ReLU`, `CrossEntropyLoss`,",
    "  `torch.optim.SGD(momentum=0.9)` or `torch.optim.Adam(fused=True)`; a hand-written loop over",
    "  `torch.randperm` batches (no DataLoader), data shared with NumPy through `torch.from_numpy`.",
    "- **scikit-learn**: `MLPClassifier(solver='sgd', momentum=0.9, nesterovs_momentum=False)` or",
    "  `solver='adam'`, `alpha=0`, same batch size, one `partial_fit` per epoch on float32 input.",
    "- **GEMM floor**: the same epoch doing only its matrix products (forward `A[l-1] @ W[l]`,",
    "  backward `A[l-1].T @ dZ[l]` and `dZ[l] @ W[l].T`) with `np.matmul(..., out=)` into",
    "  preallocated buffers, on contiguous row slices: the BLAS time any NumPy trainer of this network",
    "  spends.",
]


@dataclass
class Environment:
    """Where and how the numbers were measured."""

    date: str
    command: str
    cpu: str
    load_before: str
    load_after: str
    numpy: str
    torch: str
    sklearn: str
    python: str
    numpy_blas: str
    torch_blas: str
    threads: int
    dropped_env: str
    kept_env: str


@dataclass
class CaseResult:
    """One workload: per-contender epoch times and (train loss, train accuracy) after the run."""

    name: str
    n_samples: int
    layer_sizes: list[int]
    batch_size: int
    times: dict[str, EpochTimes]
    quality: dict[str, tuple[float, float]]

    def ratio(self, slower: str, faster: str) -> float | None:
        """How many times faster `faster` is than `slower` (median epoch times), if both ran."""
        if slower not in self.times or faster not in self.times:
            return None
        return self.times[slower].median / self.times[faster].median


@dataclass
class Target:
    name: str
    measured: str
    verdict: str  # PASS, MISS or n/a


def case_lines(case: CaseResult) -> list[str]:
    """Plain-text lines for the console."""
    lines = []
    for name, t in case.times.items():
        loss, accuracy = case.quality.get(name, (math.nan, math.nan))
        quality = "" if math.isnan(loss) else f", train loss {loss:.3f}, accuracy {accuracy:.3f}"
        lines.append(
            f"{name:15s} {t.median * 1e3:9.2f} ms/epoch  {t.samples_per_second:12,.0f} samples/s"
            f"  (IQR {t.spread:.0%}, n={len(t.seconds)}){quality}"
        )
    return lines


def memory_line(record: dict[str, Any]) -> str:
    sizes = ("_bytes", "_data", "_peak", "_training")
    r = {key: value / MIB for key, value in record.items() if key.endswith(sizes)}
    return (
        f"{record['optimizer']} ({record['config']}): data {r['data_bytes']:.1f} MiB, "
        f"params {r['param_bytes']:.2f} MiB, RSS after data {r['rss_after_data']:.1f} MiB, "
        f"peak {r['training_peak']:.1f} MiB -> training adds {r['added_by_training']:.1f} MiB"
    )


NOISY_SPREAD = 0.2
"""Interquartile range / median of a contender's epochs above which a case is flagged as noisy."""


def noisy_cases(cases: list[CaseResult]) -> list[str]:
    """Names of the cases where the engine's or a baseline's epoch times varied a lot."""
    return [
        case.name
        for case in cases
        if any(t.spread > NOISY_SPREAD for name, t in case.times.items() if name in (ENGINE, "pytorch", "GEMM floor"))
    ]


def _check(name: str, value: float | None, bound: float, at_least: bool, unit: str = "x") -> Target:
    if value is None:
        return Target(name, "engine not measured", "n/a")
    ok = value >= bound if at_least else value <= bound
    return Target(name, f"{value:.2f}{unit}", "PASS" if ok else "MISS")


def evaluate_targets(cases: list[CaseResult], memory: list[dict[str, Any]]) -> list[Target]:
    """The issue's targets, as ratios measured in this run."""
    by_name = {case.name: case for case in cases}
    targets: list[Target] = []
    big_momentum = by_name.get("big/momentum")
    if big_momentum is not None:
        targets.append(
            _check(
                "big, momentum: engine >= 1.5x PyTorch samples/s",
                big_momentum.ratio("pytorch", ENGINE),
                1.5,
                True,
            )
        )
        floor = big_momentum.ratio(ENGINE, "GEMM floor")
        targets.append(_check("big, momentum: engine epoch <= 1.2x the GEMM floor's", floor, 1.2, False))
    big_adam = by_name.get("big/adam")
    if big_adam is not None:
        targets.append(
            _check(
                "big, adam: engine >= 1.2x PyTorch fused Adam samples/s",
                big_adam.ratio("pytorch", ENGINE),
                1.2,
                True,
            )
        )
    for name in ("small/momentum", "small/adam"):
        case = by_name.get(name)
        if case is None:
            continue
        optimizer = name.split("/")[1]
        targets.append(
            _check(
                f"small, {optimizer}: engine >= 5x PyTorch samples/s",
                case.ratio("pytorch", ENGINE),
                5.0,
                True,
            )
        )
        targets.append(
            _check(
                f"small, {optimizer}: engine >= 4x scikit-learn samples/s",
                case.ratio("scikit-learn", ENGINE),
                4.0,
                True,
            )
        )
    for record in memory:
        if record["config"] != "benchmark":
            continue
        targets.append(
            _check(
                f"memory, {record['optimizer']}: training adds <= 10 MiB above data and params",
                record["added_by_training"] / MIB,
                10.0,
                False,
                " MiB",
            )
        )
    if not memory:
        targets.append(Target("memory: training adds <= 10 MiB above data and params", "not measured", "n/a"))
    return targets


def _case_table(case: CaseResult) -> list[str]:
    engine = case.times.get(ENGINE)
    rows = [
        f"**{case.name}** — {case.n_samples:,} samples, layers {'-'.join(map(str, case.layer_sizes))}, "
        f"batch {case.batch_size}, {len(next(iter(case.times.values())).seconds)} measured epochs each",
        "",
        "| contender | ms / epoch (median) | samples / s | time / engine's | IQR / median | train loss / acc. |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, t in case.times.items():
        speedup = "" if engine is None or name == ENGINE else f"{t.median / engine.median:.2f}x"
        loss, accuracy = case.quality.get(name, (math.nan, math.nan))
        quality = "—" if math.isnan(loss) else f"{loss:.3f} / {accuracy:.3f}"
        label = f"**{name}**" if name == ENGINE else name
        rows.append(
            f"| {label} | {t.median * 1e3:.2f} | {t.samples_per_second:,.0f} | {speedup} | {t.spread:.0%} | {quality} |"
        )
    return rows


def render(
    env: Environment,
    cases: list[CaseResult],
    targets: list[Target],
    memory: list[dict[str, Any]],
    quick: bool = False,
) -> str:
    """The markdown of the Engine section (without its markers)."""
    openblas = (
        f"run without `{env.dropped_env}` (set on this machine for old OpenBLAS builds; the script re-runs "
        "itself without them so that the current OpenBLAS picks its own kernel)"
        if env.dropped_env
        else (f"run with `{env.kept_env}` kept" if env.kept_env else "no OpenBLAS overrides set")
    )
    lines = [
        "## Engine",
        "",
        "_Written by `bench/engine_speed.py`; do not edit by hand between the markers._"
        if not quick
        else "_Quick smoke run (`--quick`): small data, few epochs; not a measurement._",
        "",
        f"- Run: {env.date}, `{env.command}` (from the repository root; `make bench` runs it too).",
        f"- Machine: {env.cpu}; load average {env.load_before} (1, 5, 15 min) when the run began (the run",
        "  itself then keeps both cores busy). Other work on the machine makes absolute numbers noisy; the",
        "  ratios come from interleaved epochs.",
        f"- Python {env.python}, NumPy {env.numpy}, PyTorch {env.torch}, scikit-learn {env.sklearn}.",
        f"- NumPy's BLAS (threadpoolctl): {env.numpy_blas}; {openblas}.",
        f"- PyTorch: {env.torch_blas}, `torch.set_num_threads({env.threads})` to match NumPy's BLAS threads.",
        "",
        "### Targets",
        "",
        "| target | measured | result |",
        "|---|---:|---|",
    ]
    lines += [f"| {t.name} | {t.measured} | {t.verdict} |" for t in targets]
    noisy = noisy_cases(cases)
    if noisy:
        lines += [
            "",
            f"**Noisy run**: in {', '.join(noisy)} the epoch times' interquartile range exceeds "
            f"{NOISY_SPREAD:.0%} of the median (other work on the machine); re-run on a quiet machine.",
        ]
    lines += ["", "### Epoch times", ""]
    for case in cases:
        lines += _case_table(case)
        lines.append("")
    lines += ["### Memory", ""]
    if memory:
        lines += [
            "Peak RSS of a fresh process that creates the big data set, then builds `engine.Training`",
            'and runs 2 epochs (MiB); "adds" = peak − RSS after the data was created − the parameters.',
            "",
            "| optimizer | config | data | params | RSS after data | peak | training adds |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in memory:
            lines.append(
                f"| {r['optimizer']} | {r['config']} | {r['data_bytes'] / MIB:.1f} | "
                f"{r['param_bytes'] / MIB:.2f} | {r['rss_after_data'] / MIB:.1f} | "
                f"{r['training_peak'] / MIB:.1f} | {r['added_by_training'] / MIB:.1f} |"
            )
        if not all(r["peak_was_reset"] for r in memory):
            lines += ["", "(/proc/self/clear_refs was not writable: the peak includes data creation.)"]
    else:
        lines.append("Not measured in this run.")
    lines += ["", "### How it is measured", "", *METHOD]
    return "\n".join(lines)
