"""MemoryData: serves batches from arrays handed over with ``net.set_input_arrays(data,
labels)`` (Caffe's MemoryDataLayer::Reset).

``memory_data_param { batch_size: N channels: C height: H width: W }``. Tops: data
``(N, C, H, W)`` and labels (``(N,)`` after set-up, ``(N, 1, 1, 1)`` once served, as in Caffe).
``data`` must be ``(M, C, H, W)`` and ``labels`` ``(M,)`` or ``(M, 1, 1, 1)`` with ``M`` a
multiple of ``N``; each forward serves the next ``N`` items, wrapping around. The arrays are
not copied when already float32 and C-contiguous (the tops view them, as in Caffe) and are not
transformed. No backward."""

from __future__ import annotations

import numpy as np
import torch

from caffe._common import LOG
from caffe.errors import LayerSetupError, ShapeMismatchError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("MemoryData")
class MemoryData(Layer):
    graph_safe = False
    exact_num_bottom_blobs = 0
    exact_num_top_blobs = 2
    has_backward = False

    def setup(self, bottom, top):
        p = self.layer_param.memory_data_param
        self.batch_size = int(p.batch_size)
        self.channels, self.height, self.width = int(p.channels), int(p.height), int(p.width)
        if self.batch_size * self.channels * self.height * self.width <= 0:
            raise LayerSetupError(
                f"Layer '{self.name}' (MemoryData): batch_size, channels, height and width must "
                "all be given and positive in memory_data_param; got "
                f"({self.batch_size}, {self.channels}, {self.height}, {self.width})")
        top[0].reshape(self.batch_size, self.channels, self.height, self.width)
        top[1].reshape(self.batch_size)
        self._data: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self.n = 0
        self.pos = 0

    def set_batch_size(self, batch_size: int) -> None:
        """Change the number of items served per forward (Caffe's set_batch_size)."""
        if batch_size <= 0:
            raise LayerSetupError(
                f"Layer '{self.name}' (MemoryData): batch size must be positive, got "
                f"{batch_size}")
        if self.n and self.n % batch_size:
            raise ShapeMismatchError(
                f"Layer '{self.name}' (MemoryData): the {self.n} items set with "
                f"set_input_arrays are not a multiple of the new batch size {batch_size}")
        self.batch_size = int(batch_size)
        self.pos = 0

    def reset(self, data, labels, n: int) -> None:
        """Serve ``data``/``labels`` (their first ``n`` items) from the start."""
        data = np.ascontiguousarray(data, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.float32)
        who = f"Layer '{self.name}' (MemoryData)"
        want = (self.channels, self.height, self.width)
        if data.ndim != 4 or data.shape[1:] != want:
            raise ShapeMismatchError(
                f"{who}: the data array must have shape (num, {', '.join(map(str, want))}); "
                f"got {data.shape}")
        if labels.ndim == 1:
            labels = labels.reshape(-1, 1, 1, 1)
        if labels.ndim != 4 or labels.shape[1:] != (1, 1, 1):
            raise ShapeMismatchError(
                f"{who}: the labels array must have shape (num,) or (num, 1, 1, 1); got "
                f"{labels.shape}")
        if data.shape[0] != labels.shape[0]:
            raise ShapeMismatchError(
                f"{who}: data and labels must have the same first dimension; got "
                f"{data.shape[0]} and {labels.shape[0]}")
        n = int(n)
        if not 0 < n <= data.shape[0] or n % self.batch_size:
            raise ShapeMismatchError(
                f"{who}: the number of items ({n}) must be a positive multiple of the batch "
                f"size {self.batch_size} (and at most the {data.shape[0]} items given)")
        if self.layer_param.HasField("transform_param"):
            LOG.warning("%s does not transform array data on reset()", who)
        self._arrays = (data, labels)  # keep the memory alive: the tops may view it
        self._data = torch.from_numpy(data)
        self._labels = torch.from_numpy(labels)
        self.n = n
        self.pos = 0

    def reshape(self, bottom, top):
        """The tops are reshaped by forward."""

    def forward(self, bottom, top):
        if self._data is None:
            raise LayerSetupError(
                f"Layer '{self.name}' (MemoryData) has no data: call "
                "net.set_input_arrays(data, labels) before forward")
        b, pos = self.batch_size, self.pos
        shapes = ((b, self.channels, self.height, self.width), (b, 1, 1, 1))
        for t, src, shape in zip(top, (self._data, self._labels), shapes):
            like = t.tensor
            if like.shape != shape:
                t.reshape(shape)
            # the host batch, copied to the device (as Caffe copies it when a GPU layer reads
            # it); on the CPU a view of the user's array, as in Caffe
            t.tensor = src[pos:pos + b].to(like.device, like.dtype)
        self.pos = (pos + b) % self.n
