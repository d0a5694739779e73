"""SoftmaxWithLoss: softmax over ``axis`` followed by the multinomial logistic loss.

bottom[0]: scores (outer, C, inner...) with C at ``softmax_param.axis``; bottom[1]: labels,
outer * inner integer values (stored as float). loss = -sum_valid log(max(p[label], FLT_MIN))
/ normalizer (``loss_param.normalization``: VALID (default), BATCH_SIZE, FULL, NONE; or the
legacy ``normalize``). Labels equal to ``ignore_label`` contribute nothing. Backward:
dx = (p - onehot(label)) * loss_weight / normalizer, zero at ignored positions. An optional
second top holds the probabilities.

The label range is checked on the CPU; on other devices only when the environment variable
CAFFE_CHECK_LABELS=1 is set (the check would wait for the device every forward). Nothing else
reads a value back from the device."""

from __future__ import annotations

import torch

from caffe._layers.base import LossLayer, normalization_mode, refuse_backward
from caffe._layers.loss.labels import (
    check_label_range,
    class_layout,
    int_labels,
    labels_checked_on,
    require_batch_axis,
    valid_labels,
    valid_normalizer,
)
from caffe.registry import register_layer

FLT_MIN = 1.17549435e-38

__all__ = ["SoftmaxWithLoss"]


@register_layer("SoftmaxWithLoss")
class SoftmaxWithLoss(LossLayer):
    max_top_blobs = 2
    exact_num_top_blobs = None
    min_top_blobs = 1

    def setup(self, bottom, top):
        lp = self.layer_param.loss_param
        self.ignore_label = int(lp.ignore_label) if lp.HasField("ignore_label") else None
        self.mode = normalization_mode(self.layer_param)

    def reshape(self, bottom, top):
        require_batch_axis(self, bottom[0], "the prediction (bottom 0)")
        super().reshape(bottom, top)
        # the scores as (outer, C[, inner]) and the labels as (outer, 1[, inner]): the labels
        # index the probabilities along dim 1 with no further reshaping
        (self.axis, self.outer, self.channels, self.inner, self.view,
         self.label_view) = class_layout(self, bottom[0], bottom[1],
                                         self.layer_param.softmax_param.axis, "softmax axis")
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        prob = torch.softmax(x if x.shape == self.view else x.reshape(self.view), dim=1)
        labels = int_labels(bottom[1].tensor.reshape(self.label_view))
        if labels_checked_on(labels.device):
            check_label_range(self, labels, self.channels, self.ignore_label)
        valid, index = valid_labels(labels, self.ignore_label)
        # prob.gather is a new tensor: clamp and log in place
        log_p = prob.gather(1, index).clamp_(min=FLT_MIN).log_()
        self.norm = norm = valid_normalizer(self.mode, self.outer, self.inner, valid, x.dtype)
        self.prob, self.index, self.valid = prob, index, valid
        if valid is None:
            torch.div(log_p.sum(), -norm, out=top[0].tensor)
        else:
            # where (not a product with the mask): a NaN score at an ignored position stays out
            torch.div(torch.where(valid, log_p, 0.0).sum(), norm, out=top[0].tensor).neg_()
        if len(top) > 1:
            top[1].tensor = prob.view(x.shape)

    def backward(self, top, propagate_down, bottom):
        refuse_backward(self, propagate_down, {1: "label"})
        if not propagate_down[0]:
            return
        # p - 1 at the label, in one op on a copy of p; then one scaling pass, the ignored
        # positions' zeros riding on the (outer, 1[, inner]) factor
        dx = self.prob.scatter(1, self.index, -1.0, reduce="add")
        scale = top[0].diff_tensor / self.norm
        dx.mul_(scale if self.valid is None else self.valid * scale)
        shape = bottom[0].shape
        bottom[0].diff_tensor = dx if dx.shape == shape else dx.view(shape)
