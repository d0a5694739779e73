"""BNLL (binomial normal log likelihood): y = log(1 + exp(x)), computed stably; dy/dx =
sigmoid(x) from the bottom data (as Caffe, which reads the bottom even in place). Top shaped
like the bottom."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caffe._layers.base import NeuronLayer
from caffe.registry import register_layer


@register_layer("BNLL")
class BNLL(NeuronLayer):
    def forward(self, bottom, top):
        y = F.softplus(bottom[0].tensor)
        if top[0] is bottom[0]:
            bottom[0].tensor.copy_(y)
        else:
            top[0].tensor = y

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff_tensor = torch.sigmoid(bottom[0].tensor).mul_(top[0].diff_tensor)
