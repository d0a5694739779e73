"""SigmoidCrossEntropyLoss: cross-entropy between sigmoid(x) and targets in [0, 1].

bottom[0]: scores x (N, ...); bottom[1]: targets t, same count. Per element, in Caffe's
numerically stable form: l = -(x * (t - [x >= 0]) - log(1 + exp(x - 2 * x * [x >= 0]))), the
same as torch's ``binary_cross_entropy_with_logits`` (which computes it).
loss = sum of l over elements whose int(t) != ``loss_param.ignore_label`` / normalizer.
Normalization: ``loss_param.normalization`` if set, else the legacy ``normalize`` (true: VALID,
false: BATCH_SIZE), else BATCH_SIZE (this layer's own default, unlike SoftmaxWithLoss).
Backward: dx = (sigmoid(x) - t) * loss_weight / normalizer, zero where ignored. No backward
into the targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caffe._layers.base import LossLayer, refuse_backward
from caffe._layers.loss.labels import (
    int_labels,
    require_batch_axis,
    valid_normalizer,
)
from caffe.errors import LayerSetupError
from caffe.proto import caffe_pb2
from caffe.registry import register_layer

_MODES = caffe_pb2.LossParameter


@register_layer("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(LossLayer):
    def setup(self, bottom, top):
        lp = self.layer_param.loss_param
        self.ignore_label = int(lp.ignore_label) if lp.HasField("ignore_label") else None
        if lp.HasField("normalization"):
            self.mode = lp.normalization
        elif lp.HasField("normalize"):
            self.mode = _MODES.VALID if lp.normalize else _MODES.BATCH_SIZE
        else:
            self.mode = _MODES.BATCH_SIZE

    def reshape(self, bottom, top):
        require_batch_axis(self, bottom[0], "the prediction (bottom 0)")
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise LayerSetupError(
                f"Layer '{self.name}' (SigmoidCrossEntropyLoss): scores and targets must have "
                f"the same count; got shapes {bottom[0].shape} and {bottom[1].shape}")

    def forward(self, bottom, top):
        x = bottom[0].tensor
        t = bottom[1].tensor.reshape(x.shape)
        if self.ignore_label is None:
            self.valid = None
            total = F.binary_cross_entropy_with_logits(x, t, reduction="sum")
        else:
            self.valid = int_labels(t) != self.ignore_label
            terms = F.binary_cross_entropy_with_logits(x, t, reduction="none")
            total = torch.where(self.valid, terms, torch.zeros_like(terms)).sum()
        self.norm = valid_normalizer(self.mode, x.shape[0], bottom[0].count_range(1),
                                     self.valid, x.dtype)
        top[0].tensor.fill_(total / self.norm)

    def backward(self, top, propagate_down, bottom):
        refuse_backward(self, propagate_down, {1: "target"})
        if not propagate_down[0]:
            return
        x = bottom[0].tensor
        dx = torch.sigmoid(x).sub_(bottom[1].tensor.reshape(x.shape))
        if self.valid is not None:
            dx.masked_fill_(~self.valid, 0)
        bottom[0].diff_tensor = dx.mul_(top[0].diff_tensor / self.norm)
