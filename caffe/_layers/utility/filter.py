"""Filter: keep the items (first-axis entries) whose selector is non-zero. Bottoms: K blobs of
N items each, then the selector (N,) or (N, 1, ...); tops: K blobs of the selected items, in
order. At set-up the tops have N items; from the first forward on, the selected count. Backward
puts each top diff back at its item and zeros the rest; the selector gets no diff."""

from __future__ import annotations

import torch

from caffe._layers.utility._shared import bottom_name, where
from caffe.errors import BlobCountError, LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Filter")
class Filter(Layer):
    graph_safe = False
    reshape_by_shapes = False  # the kept items follow the selector's values
    min_bottom_blobs = 2
    min_top_blobs = 1
    no_force_backward_bottoms = (-1,)  # the selector

    def setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise BlobCountError(
                f"{where(self)} takes one top blob per filtered bottom ({len(bottom) - 1} for "
                f"{len(bottom)} bottoms, the last being the selector), got {len(top)}: "
                f"{list(self.layer_param.top)}")
        self.first_reshape = True

    def reshape(self, bottom, top):
        sel = bottom[-1]
        n = sel.shape[0] if sel.num_axes else -1
        if n < 0 or any(d != 1 for d in sel.shape[1:]):
            raise LayerSetupError(
                f"{where(self)}: the selector {bottom_name(self, len(bottom) - 1)} has shape "
                f"{sel.shape}; allowed: (N,) or (N, 1, ...), one value per item")
        for i, b in enumerate(bottom[:-1]):
            if b.num_axes == 0 or b.shape[0] != n:
                raise LayerSetupError(
                    f"{where(self)}: bottom {bottom_name(self, i)} of shape {b.shape} must have "
                    f"as many items (first dim) as the selector "
                    f"{bottom_name(self, len(bottom) - 1)}, which has {n}")
        self.indices = torch.nonzero(sel.tensor.reshape(-1)).reshape(-1)
        items = n if self.first_reshape else int(self.indices.numel())
        self.first_reshape = False
        for t, b in zip(top, bottom):
            t.reshape((items,) + b.shape[1:])

    def forward(self, bottom, top):
        for t, b in zip(top, bottom):
            t.tensor = b.tensor.index_select(0, self.indices)

    def backward(self, top, propagate_down, bottom):
        for t, b, need in zip(top, bottom, propagate_down):
            if need:
                dx = torch.zeros_like(b.tensor)
                dx.index_copy_(0, self.indices, t.diff_tensor)
                b.diff_tensor = dx
