"""Power: y = (shift + scale * x)^power (``power_param``, defaults 1, 1, 0).
dy/dx = power * scale * (shift + scale * x)^(power - 1), evaluated with Caffe's special cases:
a constant when power * scale == 0 or power == 1, linear in x when power == 2, power * y / x
when shift == 0, else power * scale * y / (shift + scale * x) (so it reads the bottom data,
which is the output when run in place, as in Caffe). Top shaped like the bottom."""

from __future__ import annotations

import torch

from caffe._layers.base import NeuronLayer
from caffe._layers.neuron._operand import scale_shift
from caffe.registry import register_layer


@register_layer("Power")
class Power(NeuronLayer):
    def setup(self, bottom, top):
        p = self.layer_param.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)
        self.diff_scale = self.power * self.scale

    def forward(self, bottom, top):
        x = bottom[0].tensor
        in_place = top[0] is bottom[0]
        if self.diff_scale == 0:  # the input is ignored: y = shift^power (1 when power == 0)
            y = x if in_place else torch.empty_like(x)
            if self.power == 0:
                y.fill_(1.0)
            else:
                y.fill_(self.shift).pow_(self.power)
            top[0].tensor = y
            return
        y = scale_shift(x, self.scale, self.shift, in_place)
        if self.power != 1:
            y = y.pow_(self.power) if in_place or y is not x else torch.pow(x, self.power)
        if not in_place:
            top[0].tensor = y if y is not x else x.clone()

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff_tensor
        if self.diff_scale == 0:
            bottom[0].diff_tensor = torch.zeros_like(dy)
            return
        if self.power == 1:
            bottom[0].diff_tensor = dy * self.diff_scale
            return
        x = bottom[0].tensor
        if self.power == 2:
            g = x * (self.diff_scale * self.scale)
            if self.shift != 0:
                g.add_(self.diff_scale * self.shift)
        elif self.shift == 0:
            g = torch.div(top[0].tensor, x).mul_(self.power)
        else:
            g = torch.div(top[0].tensor, scale_shift(x, self.scale, self.shift, False))
            if self.diff_scale != 1:
                g.mul_(self.diff_scale)
        bottom[0].diff_tensor = g.mul_(dy)
