"""BatchReindex: pick items of the first axis by index. bottom 0: (N, ...); bottom 1: (M,)
indices in [0, N) stored as float integers; top: (M, ...) with top[m] = bottom0[idx[m]].
Backward scatters the top diff into a zero bottom diff, summing where an index repeats; the
index bottom gets no diff.

The index range is checked once per forward on the CPU; on other devices (where the check
would wait for the device) only when the environment variable CAFFE_CHECK_LABELS=1 is set, as
for the labels of the loss layers. Nothing else reads a value back from the device, so a CUDA
graph may capture the layer."""

from __future__ import annotations

import torch

from caffe._layers.loss.labels import all_in_range, labels_checked_on
from caffe._layers.utility._shared import bottom_name, where
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("BatchReindex")
class BatchReindex(Layer):
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

    def forward(self, bottom, top):
        idx = bottom[1].tensor.to(torch.int64)
        n = bottom[0].shape[0]
        if labels_checked_on(idx.device) and not all_in_range(idx, n):
            bad = (idx < 0) | (idx >= n)
            value = float(bottom[1].tensor[bad][0])
            raise LayerSetupError(
                f"{where(self)}: index {value:g} in bottom {bottom_name(self, 1)} is out of "
                f"range; allowed: 0 to {n - 1} (the first dim of bottom {bottom_name(self, 0)} "
                f"of shape {bottom[0].shape})")
        self.idx = idx  # for the backward: checked once, converted once
        top[0].tensor = bottom[0].tensor.index_select(0, idx)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = torch.zeros_like(bottom[0].tensor)
        bottom[0].diff_tensor = dx.index_add_(0, self.idx, top[0].diff_tensor)
