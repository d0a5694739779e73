"""The base of the prefetching data layers (Data, ImageData, WindowData): no bottoms, a data
top and an optional label top, no backward; batches come from a background
:class:`caffe.data.prefetch.Prefetcher` started by ``start_prefetch``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from caffe._common import STATE
from caffe.data import naming_layer
from caffe.data.prefetch import Prefetcher, attach, pin_batches
from caffe.errors import LayerSetupError
from caffe.layer import Layer


class PrefetchingDataLayer(Layer):
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

    def start_prefetch(self, produce: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                       depth: int, close: Callable[[], None] | None = None) -> None:
        """Run ``produce`` in the background, ``depth`` batches ahead. ``produce`` must not
        refer to the layer (so that deleting the net stops the thread). In GPU mode the
        batches are copied to the device in the background too."""
        device = STATE.device if pin_batches() else None
        self.prefetcher = Prefetcher(produce, depth, self.name, close, device)
        attach(self, self.prefetcher)

    def close(self) -> None:
        """Stop the prefetch thread now (it also stops when the layer is deleted)."""
        if self.prefetcher is not None:
            self.prefetcher.close()

    def reshape(self, bottom, top):
        """Tops are shaped by each batch."""

    def forward(self, bottom, top):
        with naming_layer(self):
            data, labels = self.prefetcher.get()
        for t, src in zip(top, (data, labels)):
            if t.shape != tuple(src.shape):
                t.reshape(tuple(src.shape))
            # the batch becomes the top's tensor (no copy when it is already on the device)
            t.tensor = src.to(device=t.tensor.device, dtype=t.tensor.dtype, non_blocking=True)
