"""Interleaved timing: run A and B alternately and report medians, so drifts of a noisy machine
hit both sides alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(fns: dict[str, Callable[[], None]], repeats: int = 15, inner: int = 20,
                warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, timed in rounds A B C A B C ..."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in samples.items()}
