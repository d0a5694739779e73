"""Log: y = log_base(shift + scale * x) (``log_param``; base -1 means e, the default).
dy/dx = scale / (ln(base) * (shift + scale * x)), from the bottom data as Caffe does (which
reads the output instead when run in place). Top shaped like the bottom."""

from __future__ import annotations

import math

import torch

from caffe._layers.base import NeuronLayer
from caffe._layers.neuron._operand import scale_shift
from caffe.errors import LayerSetupError
from caffe.registry import register_layer


@register_layer("Log")
class Log(NeuronLayer):
    def setup(self, bottom, top):
        p = self.layer_param.log_param
        base = float(p.base)
        if base != -1 and (base <= 0 or base == 1):
            raise LayerSetupError(
                f"Layer '{self.name}' (Log): log_param.base must be strictly positive and not "
                f"1, or -1 for e; got {base:g}")
        log_base = 1.0 if base == -1 else math.log(base)
        self.base_scale = 1.0 / log_base
        self.scale, self.shift = float(p.scale), float(p.shift)
        self.backward_scale = self.scale / log_base

    def forward(self, bottom, top):
        x = bottom[0].tensor
        in_place = top[0] is bottom[0]
        z = scale_shift(x, self.scale, self.shift, in_place)
        y = z.log_() if in_place or z is not x else torch.log(x)
        if self.base_scale != 1:
            y.mul_(self.base_scale)
        if not in_place:
            top[0].tensor = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = torch.reciprocal(scale_shift(bottom[0].tensor, self.scale, self.shift, False))
        if self.backward_scale != 1:
            dx.mul_(self.backward_scale)
        bottom[0].diff_tensor = dx.mul_(top[0].diff_tensor)
