"""The base of the prefetching data layers (Data, ImageData, WindowData): no bottoms, a data
top and an optional label top, no backward; batches come from a background
:class:`caffe.data.prefetch.Prefetcher` started by ``start_prefetch``.

Exact resume: every prefetched batch carries the state of its item stream and of its
:class:`Batcher` just after it was made, which is the state the next batch starts from. The
layer keeps the state of the last batch the net consumed (``state_dict``), so a snapshot saves
the position of the next batch the net will see, not the reader's (which runs ahead);
``load_state_dict`` drops the prefetched batches and restarts the reader from it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from caffe._common import LOG, STATE
from caffe.blob import Blob
from caffe.data import naming_layer
from caffe.data.prefetch import Batcher, Loader, Prefetcher, attach, pin_batches
from caffe.data.resume import fields
from caffe.errors import LayerSetupError
from caffe.layer import Layer


class ItemStream(Protocol):
    """What a prefetching layer reads: the loaders of the next batch's items, and the stream's
    position and random state (JSON-able) to resume from."""

    def next_loaders(self) -> list[Loader]: ...

    def state(self) -> dict: ...

    def set_state(self, state: object) -> None: ...


class PrefetchingDataLayer(Layer):
    graph_safe = False
    exact_num_bottom_blobs = 0
    min_top_blobs = 1
    max_top_blobs = 2
    has_backward = False

    prefetcher: Prefetcher | None = None

    def check_batch_size(self, batch_size: int, field: str) -> int:
        if batch_size <= 0:
            raise LayerSetupError(
                f"Layer '{self.name}' ({self.type}): {field}.batch_size must be positive, got "
                f"{batch_size}")
        return int(batch_size)

    def shape_tops(self, top: Sequence[Blob], batch_size: int, item_shape: Sequence[int]
                   ) -> None:
        """Data top ``(batch_size, *item_shape)`` (logged as Caffe logs it), labels
        ``(batch_size,)`` when there is a second top."""
        top[0].reshape(batch_size, *item_shape)
        LOG.info("output data size: %s", ",".join(str(d) for d in top[0].shape))
        if len(top) > 1:
            top[1].reshape(batch_size)

    def start_prefetch(self, items: ItemStream, batcher: Batcher, depth: int) -> None:
        """Make batches of ``items`` with ``batcher`` in the background, ``depth`` batches
        ahead. Closing the layer closes both (``items.close()`` when it has one). In GPU mode
        the batches are copied to the device in the background too."""

        def state() -> dict:
            return {"items": items.state(), "batcher": batcher.state()}

        def produce():
            data, labels = batcher.make(items.next_loaders())
            return data, labels, state()

        def close():
            batcher.close()
            closer = getattr(items, "close", None)
            if closer is not None:
                closer()

        what = f"the state of layer '{self.name}'"

        def reset(saved: object) -> None:
            item_state, batcher_state = fields(saved, ("items", "batcher"), what)
            items.set_state(item_state)
            batcher.set_state(batcher_state)

        self._resume_state = state()
        self._reset = reset
        device = STATE.device if pin_batches() else None
        self.prefetcher = Prefetcher(produce, depth, self.name, close, device)
        attach(self, self.prefetcher)

    def state_dict(self) -> dict:
        """The position and random state of the next batch the net will consume."""
        return self._resume_state

    def load_state_dict(self, state: dict) -> None:
        """Drop the prefetched batches and continue from ``state`` (from the next unconsumed
        batch, as before, when ``state`` is invalid)."""
        current = self._resume_state

        def reset() -> None:
            try:
                self._reset(state)
            except BaseException:
                self._reset(current)
                raise

        self.prefetcher.restart(reset)
        self._resume_state = state

    def close(self) -> None:
        """Stop the prefetch thread now (it also stops when the layer is deleted)."""
        if self.prefetcher is not None:
            self.prefetcher.close()

    def reshape(self, bottom, top):
        """Tops are shaped by each batch."""

    def forward(self, bottom, top):
        with naming_layer(self):
            data, labels, self._resume_state = self.prefetcher.get()
        for t, src in zip(top, (data, labels)):
            if t.shape != tuple(src.shape):
                t.reshape(tuple(src.shape))
            # the batch becomes the top's tensor (no copy when it is already on the device); a
            # device-to-host copy (GPU batches for a net back in CPU mode) must finish first
            t.tensor = src.to(device=t.tensor.device, dtype=t.tensor.dtype,
                              non_blocking=t.tensor.is_cuda)
