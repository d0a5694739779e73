"""``caffe.Timer``: pycaffe's stopwatch (Caffe's ``Timer``), used by ``caffe time`` as well.

``t.start()``, ``t.stop()``, then ``t.ms`` gives the milliseconds between the last start and
stop. In GPU mode, as in Caffe, the two ends are CUDA events on the current stream of the nets'
device, so ``ms`` is the device time between them (reading it waits for the stop event); in CPU
mode it is wall time. Reading ``ms`` while the timer runs stops it first; reading it before any
start logs a warning and gives 0.
"""

from __future__ import annotations

import time

import torch

from caffe._common import LOG, STATE


class Timer:
    """A stopwatch: ``start()``, ``stop()``, ``ms`` (the last start-to-stop interval)."""

    def __init__(self) -> None:
        self._running = False
        self._has_run = False
        self._cuda = False
        self._start: float | torch.cuda.Event = 0.0
        self._stop: float | torch.cuda.Event = 0.0
        self._stream: torch.cuda.Stream | None = None

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Start timing (no effect while already running)."""
        if self._running:
            return
        self._cuda = STATE.device.type == "cuda"
        if self._cuda:
            self._stream = torch.cuda.current_stream(STATE.device)
            self._start = torch.cuda.Event(enable_timing=True)
            self._stop = torch.cuda.Event(enable_timing=True)
            self._start.record(self._stream)
        else:
            self._start = time.perf_counter()
        self._running = True
        self._has_run = True

    def stop(self) -> None:
        """Stop timing (no effect while stopped)."""
        if not self._running:
            return
        if self._cuda:
            self._stop.record(self._stream)
        else:
            self._stop = time.perf_counter()
        self._running = False

    @property
    def ms(self) -> float:
        """Milliseconds from the last ``start()`` to its ``stop()``."""
        if not self._has_run:
            LOG.warning("Timer has never been run before reading time.")
            return 0.0
        self.stop()
        if self._cuda:
            self._stop.synchronize()
            return float(self._start.elapsed_time(self._stop))
        return (self._stop - self._start) * 1e3

    @property
    def seconds(self) -> float:
        """``ms`` in seconds."""
        return self.ms / 1e3
