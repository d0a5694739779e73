"""Background prefetching: a daemon thread keeps a bounded queue of ready batches (Caffe's
BasePrefetchingDataLayer with ``data_param.prefetch`` batches), and a :class:`Batcher` that
decodes and transforms the items of a batch, optionally in several threads.

The thread never holds a reference to its layer: when the layer (or its net) is deleted, or the
interpreter exits, the thread is told to stop and is joined. An error while producing a batch
is raised by the layer's next forward, naming the record; it never hangs and never serves a
silent zero batch."""

from __future__ import annotations

import atexit
import os
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from caffe._common import STATE
from caffe.data.resume import set_rng_state
from caffe.data.transformer import DataTransformer
from caffe.errors import CaffeError

#: an item loader returns (CxHxW image, label, description for error messages)
Loader = Callable[[], tuple[np.ndarray, float, str]]

_LIVE: weakref.WeakSet[Prefetcher] = weakref.WeakSet()


def decode_workers(encoded: bool) -> int:
    """Threads that decode one batch: ``CAFFE_DATA_WORKERS`` if set, else up to 4 for encoded
    images (decoding releases the GIL) and 1 for raw pixels."""
    env = os.environ.get("CAFFE_DATA_WORKERS", "")
    if env.strip():
        return max(1, int(env))
    return max(1, min(4, (os.cpu_count() or 2) // 2)) if encoded else 1


def pin_batches() -> bool:
    """Whether batches should live in pinned host memory (the net runs on CUDA)."""
    return STATE.device.type == "cuda" and torch.cuda.is_available()


def new_seed() -> int:
    """A seed for a layer's own random stream, drawn from the generator that
    ``caffe.set_random_seed`` seeds."""
    return int(torch.randint(0, 2**62, (1,), generator=STATE.generator))


class Batcher:
    """Decodes and transforms the items of a batch into a float32 ``(N, C, h, w)`` tensor and
    an ``(N,)`` label tensor. The random choices are drawn in item order from one seeded
    stream before the work is shared among threads, so batches do not depend on timing."""

    def __init__(self, transformer: DataTransformer, seed: int, workers: int = 1,
                 pin: bool = False) -> None:
        self.transformer = transformer
        self.rng = np.random.default_rng(seed)
        self.workers = max(1, int(workers))
        self.pin = pin
        self._pool: ThreadPoolExecutor | None = None

    def _map(self, fn, *iterables) -> list:
        if self.workers == 1:
            return list(map(fn, *iterables))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="caffe-decode")
        return list(self._pool.map(fn, *iterables))

    def make(self, loaders: Sequence[Loader]) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.rng.random((len(loaders), 3))
        items = self._map(lambda load: load(), loaders)
        first, _, where = items[0]
        shape = self.transformer.output_shape(first.shape, where)
        data = torch.empty((len(items), *shape), dtype=torch.float32, pin_memory=self.pin)
        out = data.numpy()
        self._map(lambda i: self.transformer.transform(items[i][0], out[i], u[i], items[i][2]),
                  range(len(items)))
        labels = torch.tensor([item[1] for item in items], dtype=torch.float32)
        return data, (labels.pin_memory() if self.pin else labels)

    def state(self) -> dict:
        """The state of the random stream (JSON-able)."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        set_rng_state(self.rng, state, "the batch transformer's random state")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Once:
    """Calls ``fn`` at most once, from whichever thread asks first."""

    def __init__(self, fn: Callable[[], None] | None) -> None:
        self._fn = fn
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            fn, self._fn = self._fn, None
        if fn is not None:
            fn()


def _fill(produce: Callable[[], object], q: queue.Queue, stop: threading.Event,
          closing: threading.Event, close: _Once) -> None:
    try:
        while not stop.is_set():
            try:
                item = produce()
            except BaseException as e:  # handed to the consumer, which raises it
                item = _Failure(e)
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if isinstance(item, _Failure):
                return
    finally:
        if closing.is_set():
            close()


class Prefetcher:
    """Runs ``produce()`` in a daemon thread, ``depth`` results ahead of :meth:`get`.
    ``close`` (if given) runs once, when the prefetcher is closed and the thread has stopped
    (in that thread if it was still busy). :meth:`restart` drops the queued results and runs
    a function while no thread runs (to reposition what ``produce`` reads)."""

    def __init__(self, produce: Callable[[], object], depth: int, name: str,
                 close: Callable[[], None] | None = None) -> None:
        self.name = name
        self._produce = produce
        self._depth = max(1, int(depth))
        self._closing = threading.Event()
        self._close = _Once(close)
        self._start()
        _LIVE.add(self)

    def _start(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=self._depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=_fill, args=(self._produce, self._queue, self._stop, self._closing,
                                self._close),
            name=f"caffe-prefetch-{self.name}", daemon=True)
        self._thread.start()

    def _halt(self, timeout: float) -> bool:
        """Stop the thread and drop the queued results; True once it has stopped."""
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def get(self):
        """The next result (waits for it); re-raises the producer's error."""
        while self._error is None:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._thread.is_alive():
                    continue
                if self._queue.empty():
                    raise CaffeError(f"the prefetch thread of '{self.name}' has stopped") from None
                continue
            if isinstance(item, _Failure):
                self._error = item.error
                break
            return item
        raise self._error

    def restart(self, reset: Callable[[], None], timeout: float = 10.0) -> None:
        """Stop the thread, drop what it prefetched, run ``reset()``, start it again."""
        if self._closing.is_set():
            raise CaffeError(f"the prefetch thread of '{self.name}' is closed")
        if not self._halt(timeout):
            raise CaffeError(f"the prefetch thread of '{self.name}' did not stop within "
                             f"{timeout} s")
        try:
            reset()
        finally:
            self._start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait for it (idempotent)."""
        self._closing.set()
        if self._halt(timeout):
            self._close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def attach(owner: object, prefetcher: Prefetcher) -> None:
    """Close ``prefetcher`` when ``owner`` (a layer) is garbage-collected."""
    weakref.finalize(owner, prefetcher.close)


@atexit.register
def _close_all() -> None:
    for p in list(_LIVE):
        p.close(timeout=2.0)
