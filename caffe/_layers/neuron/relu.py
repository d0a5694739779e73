"""ReLU: y = max(x, 0) + negative_slope * min(x, 0); dy/dx = 1 where x > 0, else
negative_slope. Any shape; may run in place."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caffe._layers.base import NeuronLayer
from caffe.registry import register_layer


@register_layer("ReLU")
class ReLU(NeuronLayer):
    replaces_tops = True
    replaces_bottom_diffs = True

    def setup(self, bottom, top):
        self.negative_slope = float(self.layer_param.relu_param.negative_slope)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        slope = self.negative_slope
        if top[0] is bottom[0]:
            if slope == 0:
                x.clamp_(min=0)
            else:
                F.leaky_relu_(x, slope)
        else:
            top[0].tensor = torch.relu(x) if slope == 0 else F.leaky_relu(x, slope)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        # in place, the bottom data holds the output: its sign is the input's sign (as in
        # Caffe, which also reads the overwritten bottom). One fused pass computing
        # dy where x > 0, else dy * slope: unlike threshold_backward it keeps Caffe's product,
        # so an Inf or NaN in dy still turns into NaN where the unit is off
        bottom[0].diff_tensor = torch.ops.aten.leaky_relu_backward(
            top[0].diff_tensor, bottom[0].tensor, self.negative_slope, False)
