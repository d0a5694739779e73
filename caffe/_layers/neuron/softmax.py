"""Softmax along ``softmax_param.axis`` (default 1): y_i = exp(x_i - max x) / sum_j exp(x_j -
max x). Backward: dx = y * (dy - sum(dy * y)) along the axis. Top shaped like the bottom.

When every axis after the softmax axis has size 1 (e.g. (N, C) or (N, C, 1, 1)), the blob is
viewed as (outer, C) so that torch runs its last-axis kernel (several times faster than its
strided one)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from caffe.layer import Layer
from caffe.registry import register_layer


def softmax_view(shape: Sequence[int], axis: int) -> tuple[int, ...]:
    """The shape to view a blob as for a softmax over dim 1: (outer, C) when nothing follows
    ``axis`` (torch's fast last-axis kernel), else (outer, C, inner)."""
    outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
    return (outer, shape[axis]) if inner == 1 else (outer, shape[axis], inner)


@register_layer("Softmax")
class Softmax(Layer):
    replaces_tops = True
    replaces_bottom_diffs = True
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    allows_in_place = True

    def setup(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.layer_param.softmax_param.axis)

    def reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.layer_param.softmax_param.axis)
        self._view = softmax_view(bottom[0].shape, self.axis)
        # an (N, C) or (N, C, inner) blob over axis 1 is its own view: no view calls, a
        # microsecond or two of Python each
        self._viewed = self._view != bottom[0].shape
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        if self._viewed:
            y = torch.softmax(x.reshape(self._view), 1).view(x.shape)
        else:
            y = torch.softmax(x, 1)
        if top[0] is bottom[0]:
            x.copy_(y)
        else:
            top[0].tensor = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].tensor
        dy = top[0].diff_tensor
        dx = torch.ops.aten._softmax_backward_data(
            dy.reshape(self._view), y.reshape(self._view), 1, y.dtype)
        bottom[0].diff_tensor = dx.view(y.shape)
