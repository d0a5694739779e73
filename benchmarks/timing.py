"""Interleaved timing: run A and B alternately and report medians, so drifts of a noisy machine
hit both sides alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_samples(fns: dict[str, Callable[[], None]], repeats: int = 15, inner: int = 20,
                        warmup: int = 3, sync: Callable[[], None] | None = None,
                        cpu_samples: dict[str, list[float]] | None = None
                        ) -> dict[str, list[float]]:
    """Wall-clock seconds per call of each function in every round, timed in rounds
    A B C A B C ... ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock reading.
    When ``cpu_samples`` is given, it receives the process CPU time per call of each round
    too (all threads of this process; unlike wall time, not inflated by other processes)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    if cpu_samples is not None:
        cpu_samples.update({k: [] for k in fns})
    for _ in range(repeats):
        for name, fn in fns.items():
            if sync is not None:
                sync()
            c0 = time.process_time()
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            if sync is not None:
                sync()
            samples[name].append((time.perf_counter() - t0) / inner)
            if cpu_samples is not None:
                cpu_samples[name].append((time.process_time() - c0) / inner)
    return samples


def interleaved(fns: dict[str, Callable[[], None]], repeats: int = 15, inner: int = 20,
                warmup: int = 3, sync: Callable[[], None] | None = None) -> dict[str, float]:
    """Median seconds per call of each function, timed in rounds A B C A B C ..."""
    samples = interleaved_samples(fns, repeats, inner, warmup, sync)
    return {k: statistics.median(v) for k, v in samples.items()}
