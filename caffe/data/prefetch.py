"""Background prefetching: a daemon thread keeps a bounded queue of ready batches (Caffe's
BasePrefetchingDataLayer with ``data_param.prefetch`` batches), and a :class:`Batcher` that
decodes and transforms the items of a batch, optionally in several threads.

The thread never holds a reference to its layer: when the layer (or its net) is deleted, or the
interpreter exits, the thread is told to stop and is joined. An error while producing a batch
is raised by the layer's next forward, naming the record; it never hangs and never serves a
silent zero batch.

The loader threads run at a lower scheduling priority (Linux: a higher nice value, which
applies per thread) so that the net's compute threads win a contended CPU; a thread that is
``prefetch`` batches ahead sleeps on the full queue. For a CUDA net the batches are built in
pinned host memory and copied to the device in the prefetch thread on a side stream, as Caffe
does, so the forward only orders its stream after that copy."""

from __future__ import annotations

import atexit
import os
import queue
import sys
import threading
import time
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

#: how much nicer than the net the loader threads run (``CAFFE_DATA_NICE`` overrides; 0: same)
DEFAULT_NICE = 10


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def decode_workers(encoded: bool) -> int:
    """Threads that decode one batch: ``CAFFE_DATA_WORKERS`` if set, else up to 4 for encoded
    images (decoding releases the GIL; half the usable CPUs) and 1 for raw pixels."""
    env = os.environ.get("CAFFE_DATA_WORKERS", "")
    if env.strip():
        return max(1, int(env))
    return max(1, min(4, usable_cpus() // 2)) if encoded else 1


def loader_nice() -> int:
    """How much nicer than the net the loader threads run: ``CAFFE_DATA_NICE`` if set, else
    :data:`DEFAULT_NICE` (read when a layer is set up)."""
    env = os.environ.get("CAFFE_DATA_NICE", "").strip()
    return int(env) if env.lstrip("-").isdigit() else DEFAULT_NICE


def lower_priority(delta: int) -> None:
    """Give the calling thread the nice value of the main thread plus ``delta`` (<= 0: leave
    it). Linux only: there nice applies per thread (elsewhere it is per process). Never
    fails."""
    if delta <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        target = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + delta)
        if os.getpriority(os.PRIO_PROCESS, tid) < target:
            os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError:
        pass


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
        self.nice = loader_nice()
        self._pool: ThreadPoolExecutor | None = None

    def _map(self, fn, *iterables) -> list:
        if self.workers == 1:
            return list(map(fn, *iterables))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="caffe-decode",
                                            initializer=lower_priority,
                                            initargs=(self.nice,))
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


class _OnDevice:
    """A batch whose tensors were copied to a CUDA device on a side stream, with the event
    that ends the copy (other members, such as the reader state, ride along unchanged)."""

    def __init__(self, items: tuple, event) -> None:
        self.items = items
        self.event = event


class _DeviceStage:
    """Copies the (pinned) tensors of each batch to ``device`` on a side stream; runs in the
    prefetch thread."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def __call__(self, batch: tuple) -> _OnDevice:
        with torch.cuda.stream(self.stream):
            items = tuple(x.to(self.device, non_blocking=True) if isinstance(x, torch.Tensor)
                          else x for x in batch)
            event = torch.cuda.Event()
            event.record(self.stream)
        return _OnDevice(items, event)


def _on_consumer_stream(batch: _OnDevice) -> tuple:
    """The staged batch, usable on the current stream (which waits for its copy)."""
    stream = torch.cuda.current_stream(batch.items[0].device)
    stream.wait_event(batch.event)
    for x in batch.items:
        if isinstance(x, torch.Tensor):
            x.record_stream(stream)  # freed tensors are not reused before this stream is done
    return batch.items


def _fill(produce: Callable[[], object], q: queue.Queue, stop: threading.Event,
          closing: threading.Event, close: _Once, nice: int) -> None:
    lower_priority(nice)
    failed = False
    try:
        while not stop.is_set():
            try:
                item = produce()
            except BaseException as e:  # handed to the consumer, which raises it
                item = _Failure(e)
                failed = True
            if stop.is_set():
                return
            q.put(item)  # sleeps while the queue is full; stopping empties it to wake us
            if failed:
                return
    finally:
        if failed or closing.is_set():  # after a failure nothing reads on: free the workers
            close()


class Prefetcher:
    """Runs ``produce()`` in a daemon thread, ``depth`` results ahead of :meth:`get`.
    ``close`` (if given) runs once, when the prefetcher is closed and the thread has stopped
    (in that thread if it was still busy). :meth:`restart` drops the queued results and runs
    a function while no thread runs (to reposition what ``produce`` reads). With a CUDA
    ``device``, ``produce`` returns a tuple of (pinned) CPU tensors and other values, whose
    tensors the thread copies to the device; :meth:`get` returns them there, ready to use on
    the caller's current stream.

    :attr:`waits` counts the :meth:`get` calls that found no batch ready (the net waited on
    data), :attr:`wait_s` the time they waited; :attr:`served` counts all results."""

    def __init__(self, produce: Callable[[], object], depth: int, name: str,
                 close: Callable[[], None] | None = None,
                 device: torch.device | None = None) -> None:
        self.name = name
        self.depth = max(1, int(depth))
        self.waits = 0
        self.wait_s = 0.0
        self.served = 0
        if device is not None and device.type == "cuda":
            stage = _DeviceStage(device)

            def work():
                return stage(produce())
        else:
            work = produce
        self._produce = work
        self._closing = threading.Event()
        self._close = _Once(close)
        self._start()
        _LIVE.add(self)

    def _start(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=self.depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=_fill, args=(self._produce, self._queue, self._stop, self._closing,
                                self._close, loader_nice()),
            name=f"caffe-prefetch-{self.name}", daemon=True)
        self._thread.start()

    def _halt(self, timeout: float) -> bool:
        """Stop the thread and drop the queued results; True once it has stopped."""
        self._stop.set()
        if self._thread is threading.current_thread():
            return False  # a finalizer run by the thread itself (which may hold the queue's
            # lock): it sees the flag before its next put, and closes on its way out
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def ready_batches(self) -> int:
        """How many results are waiting in the queue now."""
        return self._queue.qsize()

    @property
    def queue_full(self) -> bool:
        """Whether the producer is ``depth`` results ahead (and sleeping)."""
        return self._queue.full()

    def get(self):
        """The next result (waits for it); re-raises the producer's error."""
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            t0 = time.perf_counter()
            item = self._wait()
            self.waits += 1
            self.wait_s += time.perf_counter() - t0
        if isinstance(item, _Failure):
            self._error = item.error
            raise self._error
        self.served += 1
        return _on_consumer_stream(item) if isinstance(item, _OnDevice) else item

    def _wait(self):
        while self._error is None:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise CaffeError(f"the prefetch thread of '{self.name}' has stopped"
                                     ) from None
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
