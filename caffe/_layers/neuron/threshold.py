"""Threshold: y = 1 where x > threshold (``threshold_param.threshold``, default 0), else 0.
No backward (Caffe does not implement one). Top shaped like the bottom."""

from __future__ import annotations

from caffe._layers.base import NeuronLayer
from caffe.registry import register_layer


@register_layer("Threshold")
class Threshold(NeuronLayer):
    has_backward = False

    def setup(self, bottom, top):
        self.threshold = float(self.layer_param.threshold_param.threshold)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        y = (x > self.threshold).to(x.dtype)
        if top[0] is bottom[0]:
            x.copy_(y)
        else:
            top[0].tensor = y
