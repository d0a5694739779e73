"""AbsVal: y = |x|; dy/dx = sign(x) (0 at x = 0). Top shaped like the bottom. Like Caffe, it
refuses to run in place (backward needs the input's sign)."""

from __future__ import annotations

import torch

from caffe._layers.base import NeuronLayer
from caffe.errors import LayerSetupError
from caffe.registry import register_layer


@register_layer("AbsVal")
class AbsVal(NeuronLayer):
    def setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise LayerSetupError(
                f"Layer '{self.name}' (AbsVal) does not allow in-place computation: give its "
                "top a name different from its bottom")

    def forward(self, bottom, top):
        top[0].tensor = torch.abs(bottom[0].tensor)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff_tensor = torch.sign(bottom[0].tensor).mul_(top[0].diff_tensor)
