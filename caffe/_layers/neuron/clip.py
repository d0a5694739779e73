"""Clip: y = max(min, min(x, max)) (``clip_param.min``/``max``); dy/dx = 1 where
min <= x <= max, else 0, read from the bottom data as Caffe does (in place, that is the clipped
output, so every element passes its gradient). Top shaped like the bottom."""

from __future__ import annotations

import torch

from caffe._layers.base import NeuronLayer
from caffe.errors import LayerSetupError
from caffe.registry import register_layer


@register_layer("Clip")
class Clip(NeuronLayer):
    def setup(self, bottom, top):
        p = self.layer_param.clip_param
        missing = [f for f in ("min", "max") if not p.HasField(f)]
        if missing:
            raise LayerSetupError(
                f"Layer '{self.name}' (Clip): clip_param.{' and clip_param.'.join(missing)} "
                f"not given; caffe.proto marks min and max required (Caffe refuses such a net): "
                f"add clip_param {{ min: ... max: ... }}")
        self.min = float(p.min)
        self.max = float(p.max)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        in_place = top[0] is bottom[0]
        if self.min > self.max:  # Caffe's max(min, min(x, max)) is then min everywhere
            if in_place:
                x.fill_(self.min)
            else:
                top[0].tensor = torch.full_like(x, self.min)
        elif in_place:
            x.clamp_(self.min, self.max)
        else:
            top[0].tensor = torch.clamp(x, self.min, self.max)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = bottom[0].tensor
            inside = (x >= self.min) & (x <= self.max)
            bottom[0].diff_tensor = top[0].diff_tensor * inside
