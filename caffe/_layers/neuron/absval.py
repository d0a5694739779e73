"""AbsVal: y = |x|; dy/dx = sign(x) (0 at x = 0). Top shaped like the bottom. Like Caffe, it
refuses to run in place (backward needs the input's sign)."""

from __future__ import annotations

import torch

from caffe._layers.base import NeuronLayer
from caffe.registry import register_layer


@register_layer("AbsVal")
class AbsVal(NeuronLayer):
    allows_in_place = False

    def forward(self, bottom, top):
        top[0].tensor = torch.abs(bottom[0].tensor)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff_tensor = torch.sign(bottom[0].tensor).mul_(top[0].diff_tensor)
