"""Silence: consume bottoms without producing anything (no tops). Forward does nothing;
backward writes zero diffs to the bottoms it propagates to."""

from __future__ import annotations

from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Silence")
class Silence(Layer):
    min_bottom_blobs = 1
    exact_num_top_blobs = 0

    def forward(self, bottom, top):
        """Nothing to compute."""

    def backward(self, top, propagate_down, bottom):
        for b, need in zip(bottom, propagate_down):
            if need:  # into the diff's own memory, as Caffe sets it (no new buffer per pass)
                b.diff_tensor.zero_()
