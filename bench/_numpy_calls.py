"""Per-call costs of the NumPy idioms a fused training step is made of, on the benchmark's shapes.

    python -m bench._numpy_calls        # from the repository root; prints microseconds per call

Each pair compares the form the engine's step used when it was profiled with a cheaper equivalent (same
result, bit for bit, except where noted). Best of five runs of many calls, so other load on the machine
matters less; the numbers back the suggestions in the engine benchmark's notes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def per_call_us(fn: Callable[[], object], calls: int = 4000) -> float:
    """Best-of-5 mean time of one call, in microseconds."""
    for _ in range(100):
        fn()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def comparisons(m: int, hidden: int, k: int, n_params: int) -> list[tuple[str, str, float, str, float]]:
    """(what, slow form, us, fast form, us) for batch m, a hidden width, k classes, n_params parameters."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    Z = rng.standard_normal((m, hidden)).astype(f32)
    zeros = np.zeros_like(Z)
    A = np.maximum(Z, zeros)
    dA = rng.standard_normal((m, hidden)).astype(f32)
    mask = np.empty((m, hidden), bool)
    fmask = np.empty_like(Z)
    logits = rng.standard_normal((m, k)).astype(f32)
    logits_t = np.ascontiguousarray(logits.T)
    col = np.empty((m, 1), f32)
    per_sample = np.empty(m, f32)
    ones_k = np.ones(k, f32)
    ones_m = np.ones(m, f32)
    db = np.empty(hidden, f32)
    theta = rng.standard_normal(n_params).astype(f32)
    grad = rng.standard_normal(n_params).astype(f32)
    velocity = np.zeros(n_params, f32)
    rows: list[tuple[str, str, float, str, float]] = []

    def row(what: str, slow: str, slow_fn: Callable[[], object], fast: str, fast_fn: Callable[[], object]) -> None:
        rows.append((what, slow, per_call_us(slow_fn), fast, per_call_us(fast_fn)))

    row(
        f"relu forward ({m}, {hidden})",
        "np.maximum(Z, 0, out=Z)",
        lambda: np.maximum(Z, 0, out=Z),
        "np.maximum(Z, zeros, out=Z)",
        lambda: np.maximum(Z, zeros, out=Z),
    )
    row(
        f"relu backward ({m}, {hidden})",
        "greater->bool mask; dA *= mask",
        lambda: (np.greater(A, 0, out=mask), np.multiply(dA, mask, out=dA)),
        "greater->float mask; dA *= fmask",
        lambda: (np.greater(A, 0, out=fmask, casting="unsafe"), np.multiply(dA, fmask, out=dA)),
    )
    row(
        f"softmax row max ({m}, {k})",
        "np.max(Z, axis=1, keepdims=True, out=col)",
        lambda: np.max(logits, axis=1, keepdims=True, out=col),
        "np.maximum.reduce(ZT, axis=0, out=v) on (k, m)",
        lambda: np.maximum.reduce(logits_t, axis=0, out=per_sample),
    )
    row(
        f"softmax row sum ({m}, {k})",
        "np.sum(Z, axis=1, out=v)",
        lambda: np.sum(logits, axis=1, out=per_sample),
        "np.matmul(Z, ones_k, out=v) (gemv)",
        lambda: np.matmul(logits, ones_k, out=per_sample),
    )
    row(
        f"softmax row sum, transposed ({k}, {m})",
        "np.sum(ZT, axis=0, out=v)",
        lambda: np.sum(logits_t, axis=0, out=per_sample),
        "np.add.reduce(ZT, axis=0, out=v)",
        lambda: np.add.reduce(logits_t, axis=0, out=per_sample),
    )
    row(
        f"bias gradient ({m}, {hidden})",
        "np.sum(dZ, axis=0, out=db)",
        lambda: np.sum(dA, axis=0, out=db),
        "np.matmul(ones_m, dZ, out=db) (gemv)",
        lambda: np.matmul(ones_m, dA, out=db),
    )

    def momentum4() -> None:
        velocity.__imul__(0.9)
        grad.__imul__(0.05)
        velocity.__isub__(grad)
        theta.__iadd__(velocity)

    def momentum3() -> None:
        velocity.__imul__(0.9)
        velocity.__iadd__(grad)
        theta.__isub__(velocity)

    row(
        f"momentum update ({n_params:,} params)",
        "v*=mu; g*=lr; v-=g; theta+=v",
        momentum4,
        "lr folded into dZ[L]: u*=mu; u+=g; theta-=u",
        momentum3,
    )
    return rows


def main() -> None:
    sizes = {"big": (128, 256, 10, 235_146), "small": (32, 32, 10, 2_410)}
    for name, (m, hidden, k, n_params) in sizes.items():
        print(f"{name}: batch {m}, hidden {hidden}, {k} classes, {n_params:,} parameters")
        for what, slow, slow_us, fast, fast_us in comparisons(m, hidden, k, n_params):
            print(f"  {what:34s} {slow_us:7.2f} us  {slow:44s} -> {fast_us:7.2f} us  {fast}")


if __name__ == "__main__":
    main()
