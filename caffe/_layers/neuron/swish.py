"""Swish: y = x * sigmoid(beta * x) (``swish_param.beta``, default 1). dy/dx =
beta * y + s * (1 - beta * y) with s = sigmoid(beta * x), kept from the forward as Caffe keeps
it (so in-place runs work). Top shaped like the bottom."""

from __future__ import annotations

import torch

from caffe._layers.base import NeuronLayer
from caffe.registry import register_layer


@register_layer("Swish")
class Swish(NeuronLayer):
    def setup(self, bottom, top):
        self.beta = float(self.layer_param.swish_param.beta)
        self._sig: torch.Tensor | None = None

    def forward(self, bottom, top):
        x = bottom[0].tensor
        s = torch.sigmoid(x if self.beta == 1 else x * self.beta)
        self._sig = s
        if top[0] is bottom[0]:
            x.mul_(s)
        else:
            top[0].tensor = x * s

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        by = top[0].tensor * self.beta
        bottom[0].diff_tensor = torch.addcmul(by, self._sig, 1 - by).mul_(top[0].diff_tensor)
