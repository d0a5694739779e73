"""ELU: y = x for x > 0, alpha * (exp(x) - 1) otherwise (``elu_param.alpha``, default 1).
dy/dx = 1 for x > 0, else y + alpha (= alpha * exp(x)), read from the output as Caffe does, so
in-place runs give the same gradient. Top shaped like the bottom."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caffe._layers.base import NeuronLayer
from caffe.registry import register_layer


@register_layer("ELU")
class ELU(NeuronLayer):
    def setup(self, bottom, top):
        self.alpha = float(self.layer_param.elu_param.alpha)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        if top[0] is bottom[0]:
            F.elu(x, self.alpha, inplace=True)
        else:
            top[0].tensor = F.elu(x, self.alpha)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, dy = bottom[0].tensor, top[0].tensor, top[0].diff_tensor
        if self.alpha >= 0:
            # y > 0 exactly where x > 0: one fused pass from the output
            dx = torch.ops.aten.elu_backward(dy, self.alpha, 1.0, 1.0, True, y)
        else:
            # a negative alpha flips the sign of y for x < 0; torch refuses it from the output
            dx = torch.where(x > 0, dy, dy * (y + self.alpha))
        bottom[0].diff_tensor = dx
