"""Softmax along ``softmax_param.axis`` (default 1): y_i = exp(x_i - max x) / sum_j exp(x_j -
max x). Backward: dx = y * (dy - sum(dy * y)) along the axis. Top shaped like the bottom."""

from __future__ import annotations

import torch

from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Softmax")
class Softmax(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.layer_param.softmax_param.axis)

    def reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.layer_param.softmax_param.axis)
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        y = torch.softmax(bottom[0].tensor, dim=self.axis)
        if top[0] is bottom[0]:
            bottom[0].tensor.copy_(y)
        else:
            top[0].tensor = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].tensor
        dy = top[0].diff_tensor
        dx = y * (dy - (dy * y).sum(dim=self.axis, keepdim=True))
        bottom[0].diff_tensor = dx
