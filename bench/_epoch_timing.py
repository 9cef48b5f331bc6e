"""Interleaved epoch timing: every contender runs one epoch per round, in a rotating order."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class EpochTimes:
    """Seconds per epoch for one contender (warm-up epochs not included)."""

    name: str
    n_samples: int
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """Interquartile range / median of the measured epochs: how noisy the machine was."""
        if len(self.seconds) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.seconds, n=4)
        return (q3 - q1) / self.median

    @property
    def samples_per_second(self) -> float:
        return self.n_samples / self.median


SETTLE_SECONDS = 0.2
"""Pause before each contender's turn. OpenBLAS' worker threads busy-wait for about 0.1 s after a BLAS call
and PyTorch's OpenMP threads spin too: without the pause, the first ~100 ms of PyTorch's epoch after a NumPy
contender (or the reverse) share the cores with a spinning thread and run up to 10x slower."""


def time_interleaved(
    contenders: dict[str, Callable[[], None]],
    n_samples: int,
    rounds: int,
    warmup: int = 1,
    epochs_per_turn: int = 1,
    settle: float = SETTLE_SECONDS,
    log: Callable[[str], None] | None = None,
) -> dict[str, EpochTimes]:
    """Run `warmup + rounds` rounds; in each, every contender runs `epochs_per_turn` epochs, each timed.

    The order rotates from round to round so that no contender always runs right after the same other one.
    The garbage collector is off while an epoch runs. Warm-up rounds are not recorded.
    """
    names = list(contenders)
    times = {name: EpochTimes(name, n_samples) for name in names}
    for round_index in range(warmup + rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            time.sleep(settle)
            run = contenders[name]
            gc.disable()
            try:
                for _ in range(epochs_per_turn):
                    start = time.perf_counter()
                    run()
                    elapsed = time.perf_counter() - start
                    if round_index >= warmup:
                        times[name].seconds.append(elapsed)
            finally:
                gc.enable()
        if log is not None and round_index >= warmup:
            log(
                f"  round {round_index - warmup + 1}/{rounds}: "
                + ", ".join(f"{name} {times[name].seconds[-1] * 1e3:.1f} ms" for name in names)
            )
    return times
