"""BatchReindex: pick items of the first axis by index. bottom 0: (N, ...); bottom 1: (M,)
indices in [0, N) stored as float integers; top: (M, ...) with top[m] = bottom0[idx[m]].
Backward scatters the top diff into a zero bottom diff, summing where an index repeats; the
index bottom gets no diff."""

from __future__ import annotations

import torch

from caffe._layers.utility._shared import bottom_name, where
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("BatchReindex")
class BatchReindex(Layer):
    graph_safe = False
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1
    no_force_backward_bottoms = (1,)

    def reshape(self, bottom, top):
        if bottom[1].num_axes != 1:
            raise LayerSetupError(
                f"{where(self)}: the index bottom {bottom_name(self, 1)} must be 1-D, got shape "
                f"{bottom[1].shape}")
        if not bottom[0].shape:
            raise LayerSetupError(f"{where(self)}: bottom {bottom_name(self, 0)} needs at least "
                                  "one axis (the items to pick from); got a scalar")
        top[0].reshape((bottom[1].shape[0],) + bottom[0].shape[1:])

    def _indices(self, bottom) -> torch.Tensor:
        idx = bottom[1].tensor.to(torch.int64)
        n = bottom[0].shape[0]
        bad = (idx < 0) | (idx >= n)
        if bool(bad.any()):
            value = float(bottom[1].tensor[bad][0])
            raise LayerSetupError(
                f"{where(self)}: index {value:g} in bottom {bottom_name(self, 1)} is out of "
                f"range; allowed: 0 to {n - 1} (the first dim of bottom {bottom_name(self, 0)} "
                f"of shape {bottom[0].shape})")
        return idx

    def forward(self, bottom, top):
        top[0].tensor = bottom[0].tensor.index_select(0, self._indices(bottom))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = torch.zeros_like(bottom[0].tensor)
        dx.index_add_(0, self._indices(bottom), top[0].diff_tensor)
        bottom[0].diff_tensor = dx
