"""TanH: y = tanh(x); dy/dx = 1 - y^2, from the output (works in place). Top shaped like the
bottom."""

from __future__ import annotations

import torch

from caffe._layers.base import NeuronLayer
from caffe.registry import register_layer


@register_layer("TanH")
class TanH(NeuronLayer):
    replaces_tops = True
    replaces_bottom_diffs = True

    def forward(self, bottom, top):
        x = bottom[0].tensor
        if top[0] is bottom[0]:
            x.tanh_()
        else:
            top[0].tensor = torch.tanh(x)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff_tensor = torch.ops.aten.tanh_backward(
                top[0].diff_tensor, top[0].tensor)
