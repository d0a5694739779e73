"""Split: hands one bottom to several consumers. Every top shares the bottom's data; backward
sums the tops' diffs into the bottom diff. The net inserts these automatically for a blob used
more than once."""

from __future__ import annotations

import torch

from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Split")
class Split(Layer):
    replaces_bottom_diffs = True
    exact_num_bottom_blobs = 1
    min_top_blobs = 1

    def reshape(self, bottom, top):
        for t in top:
            if t is not bottom[0]:
                t.reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        for t in top:
            if t is not bottom[0]:
                t.tensor = x

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diffs = [t.diff_tensor for t in top if t.has_diff] or [top[0].diff_tensor]
        total = diffs[0] if len(diffs) == 1 else torch.add(diffs[0], diffs[1])
        for d in diffs[2:]:
            total.add_(d)
        if top[0] is not bottom[0]:
            bottom[0].diff_tensor = total
