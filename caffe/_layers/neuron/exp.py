"""Exp: y = base^(shift + scale * x) (``exp_param``; base -1 means e, the default).
Computed as outer * exp(inner * x) with inner = scale * ln(base) and outer = base^shift;
dy/dx = inner * y, from the output (works in place). Top shaped like the bottom."""

from __future__ import annotations

import math

import torch

from caffe._layers.base import NeuronLayer
from caffe.errors import LayerSetupError
from caffe.registry import register_layer


@register_layer("Exp")
class Exp(NeuronLayer):
    def setup(self, bottom, top):
        p = self.layer_param.exp_param
        base, scale, shift = float(p.base), float(p.scale), float(p.shift)
        if base != -1 and base <= 0:
            raise LayerSetupError(
                f"Layer '{self.name}' (Exp): exp_param.base must be strictly positive, or -1 "
                f"for e; got {base:g}")
        log_base = 1.0 if base == -1 else math.log(base)
        self.inner = log_base * scale
        if shift == 0:
            self.outer = 1.0
        else:
            self.outer = math.exp(shift) if base == -1 else base ** shift

    def forward(self, bottom, top):
        x = bottom[0].tensor
        if top[0] is bottom[0]:
            y = x.mul_(self.inner) if self.inner != 1 else x
            y.exp_()
        else:
            y = torch.exp(x * self.inner) if self.inner != 1 else torch.exp(x)
            top[0].tensor = y
        if self.outer != 1:
            y.mul_(self.outer)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = top[0].diff_tensor * top[0].tensor
        if self.inner != 1:
            dx.mul_(self.inner)
        bottom[0].diff_tensor = dx
