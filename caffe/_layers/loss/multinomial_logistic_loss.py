"""MultinomialLogisticLoss: the log loss of given probabilities.

bottom[0]: probabilities (N, D...) (D = count / N classes, used as given: no softmax);
bottom[1]: labels (N,) (channels, height and width 1) in [0, D).
loss = -sum_n log(max(p[n, label_n], 1e-20)) / N. Backward: dp[n, label_n] =
-loss_weight / (N * max(p[n, label_n], 1e-20)), zero elsewhere. No backward into the labels."""

from __future__ import annotations

import torch

from caffe._layers.base import LossLayer, refuse_backward
from caffe._layers.loss.labels import (
    LOG_THRESHOLD,
    check_labels,
    int_labels,
    require_batch_axis,
    require_one_per_item,
)
from caffe.registry import register_layer


@register_layer("MultinomialLogisticLoss")
class MultinomialLogisticLoss(LossLayer):
    def reshape(self, bottom, top):
        require_batch_axis(self, bottom[0], "the prediction (bottom 0)")
        super().reshape(bottom, top)
        require_one_per_item(self, bottom[1], "the label (bottom 1)")

    def forward(self, bottom, top):
        num = bottom[0].shape[0]
        p = bottom[0].tensor.reshape(num, -1)
        labels = int_labels(bottom[1].tensor).reshape(num, 1)
        check_labels(self, labels, p.shape[1], None)
        self.labels = labels
        self.p_true = p.gather(1, labels).clamp_min(LOG_THRESHOLD)
        top[0].tensor.fill_(-torch.log(self.p_true).sum() / num)

    def backward(self, top, propagate_down, bottom):
        refuse_backward(self, propagate_down, {1: "label"})
        if not propagate_down[0]:
            return
        num = bottom[0].shape[0]
        scale = -top[0].diff_tensor / num
        dp = torch.zeros_like(bottom[0].tensor).reshape(num, -1)
        dp.scatter_(1, self.labels, scale / self.p_true)
        bottom[0].diff_tensor = dp.view(bottom[0].shape)
