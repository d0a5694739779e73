"""ReLU: y = max(x, 0) + negative_slope * min(x, 0); dy/dx = 1 where x > 0, else
negative_slope. Any shape; may run in place."""

from __future__ import annotations

import torch

from caffe._layers.base import NeuronLayer
from caffe.registry import register_layer


@register_layer("ReLU")
class ReLU(NeuronLayer):
    def setup(self, bottom, top):
        self.negative_slope = float(self.layer_param.relu_param.negative_slope)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        if self.negative_slope == 0:
            if top[0] is bottom[0]:
                x.clamp_(min=0)
            else:
                top[0].tensor = torch.relu(x)
        else:
            y = torch.where(x > 0, x, x * self.negative_slope)
            if top[0] is bottom[0]:
                x.copy_(y)
            else:
                top[0].tensor = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        # in place, the bottom data holds the output: its sign is the input's sign
        x = bottom[0].tensor
        dy = top[0].diff_tensor
        if self.negative_slope == 0:
            dx = dy * (x > 0)
        else:
            dx = torch.where(x > 0, dy, dy * self.negative_slope)
        bottom[0].diff_tensor = dx
