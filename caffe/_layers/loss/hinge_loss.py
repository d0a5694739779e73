"""HingeLoss: one-vs-all hinge loss for multiclass classification.

bottom[0]: scores (N, D...) (D = count / N classes); bottom[1]: labels, the first N values used,
in [0, D). With t[n, k] = max(0, 1 + s[n, k] * x[n, k]), s = -1 at the true class and +1
elsewhere: loss = sum |t| / N (``norm: L1``, default) or sum t^2 / N (``L2``). Backward:
dx = s * sign(t) * w / N (L1) or 2 * s * t * w / N (L2), w the loss weight.

As in Caffe, the forward leaves t in bottom[0]'s diff (Caffe uses that diff as scratch space);
a backward then overwrites it with the gradient. No backward into the labels."""

from __future__ import annotations

import torch

from caffe._layers.base import LossLayer, refuse_backward
from caffe._layers.loss.labels import (
    check_labels,
    int_labels,
    require_batch_axis,
)
from caffe.proto import caffe_pb2
from caffe.registry import register_layer

_L1 = caffe_pb2.HingeLossParameter.L1


@register_layer("HingeLoss")
class HingeLoss(LossLayer):
    def setup(self, bottom, top):
        self.l1 = self.layer_param.hinge_loss_param.norm == _L1

    def reshape(self, bottom, top):
        require_batch_axis(self, bottom[0], "the prediction (bottom 0)")
        super().reshape(bottom, top)

    def forward(self, bottom, top):
        num = bottom[0].shape[0]
        x = bottom[0].tensor.reshape(num, -1)
        labels = int_labels(bottom[1].tensor.reshape(-1)[:num]).unsqueeze(1)
        check_labels(self, labels, x.shape[1], None)
        sign = torch.ones_like(x).scatter_(1, labels, -1.0)
        t = (sign * x).add_(1).clamp_min_(0)
        self.sign, self.margins = sign, t
        flat = t.view(-1)
        # t >= 0, so its L1 norm is its plain sum
        loss = flat.sum() if self.l1 else torch.dot(flat, flat)
        top[0].tensor.fill_(loss / num)
        # shared, not copied: the backward replaces this diff, it never writes into it
        bottom[0].diff_tensor = t.view(bottom[0].shape)

    def backward(self, top, propagate_down, bottom):
        refuse_backward(self, propagate_down, {1: "label"})
        if not propagate_down[0]:
            return
        num = bottom[0].shape[0]
        g = self.sign * self.margins
        if self.l1:
            dx = torch.sign(g) * (top[0].diff_tensor / num)
        else:
            dx = g * (top[0].diff_tensor * 2 / num)
        bottom[0].diff_tensor = dx.reshape(bottom[0].shape)
