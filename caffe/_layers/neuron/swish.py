"""Swish: y = x * sigmoid(beta * x) (``swish_param.beta``, default 1). dy/dx =
beta * y + s * (1 - beta * y) with s = sigmoid(beta * x). Out of place (beta != 0) this is
torch's fused SiLU on beta * x: y = silu(beta * x) / beta. In place the input is gone, so the
forward keeps s as Caffe does. Top shaped like the bottom."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caffe._layers.base import NeuronLayer
from caffe.registry import register_layer


@register_layer("Swish")
class Swish(NeuronLayer):
    def setup(self, bottom, top):
        self.beta = float(self.layer_param.swish_param.beta)
        self._sig: torch.Tensor | None = None
        self._scaled: torch.Tensor | None = None

    def forward(self, bottom, top):
        x = bottom[0].tensor
        bx = x if self.beta == 1 else x * self.beta
        if top[0] is bottom[0] or self.beta == 0:
            self._scaled = None
            self._sig = s = torch.sigmoid(bx)
            if top[0] is bottom[0]:
                x.mul_(s)
            else:
                top[0].tensor = x * s
            return
        self._sig = None
        # beta == 1: the bottom itself is still there in backward; keep no copy of it
        self._scaled = None if self.beta == 1 else bx
        y = F.silu(bx)
        top[0].tensor = y if self.beta == 1 else y.div_(self.beta)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff_tensor
        if self._sig is None:
            bx = bottom[0].tensor if self._scaled is None else self._scaled
            bottom[0].diff_tensor = torch.ops.aten.silu_backward(dy, bx)
            return
        by = top[0].tensor * self.beta
        bottom[0].diff_tensor = torch.addcmul(by, self._sig, 1 - by).mul_(dy)
