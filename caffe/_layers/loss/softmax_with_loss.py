"""SoftmaxWithLoss: softmax over ``axis`` followed by the multinomial logistic loss.

bottom[0]: scores (outer, C, inner...) with C at ``softmax_param.axis``; bottom[1]: labels,
outer * inner integer values (stored as float). loss = -sum_valid log(max(p[label], FLT_MIN))
/ normalizer (``loss_param.normalization``: VALID (default), BATCH_SIZE, FULL, NONE; or the
legacy ``normalize``). Labels equal to ``ignore_label`` contribute nothing. Backward:
dx = (p - onehot(label)) * loss_weight / normalizer, zero at ignored positions. An optional
second top holds the probabilities."""

from __future__ import annotations

import math

import torch

from caffe._layers.base import LossLayer, normalization_mode, normalizer
from caffe._layers.loss.labels import check_labels, int_labels, refuse_backward
from caffe.errors import LayerSetupError
from caffe.registry import register_layer

FLT_MIN = 1.17549435e-38

__all__ = ["SoftmaxWithLoss", "check_labels"]


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
        super().reshape(bottom, top)
        shape = bottom[0].shape
        self.axis = bottom[0].canonical_axis(self.layer_param.softmax_param.axis)
        self.outer = math.prod(shape[:self.axis])
        self.channels = shape[self.axis]
        self.inner = math.prod(shape[self.axis + 1:])
        if self.outer * self.inner != bottom[1].count:
            raise LayerSetupError(
                f"Layer '{self.name}' (SoftmaxWithLoss): number of labels must match number of "
                f"predictions; scores {shape} with softmax axis {self.axis} need "
                f"{self.outer * self.inner} labels, got {bottom[1].count} (shape "
                f"{bottom[1].shape})")
        if len(top) > 1:
            top[1].reshape(shape)

    def forward(self, bottom, top):
        x = bottom[0].tensor.reshape(self.outer, self.channels, self.inner)
        prob = torch.softmax(x, dim=1)
        labels = int_labels(bottom[1].tensor).reshape(self.outer, self.inner)
        check_labels(self, labels, self.channels, self.ignore_label)
        if self.ignore_label is not None:
            valid = labels != self.ignore_label
            safe = torch.where(valid, labels, torch.zeros_like(labels))
        else:
            valid, safe = None, labels
        p_true = prob.gather(1, safe.unsqueeze(1)).squeeze(1)
        nll = -torch.log(torch.clamp(p_true, min=FLT_MIN))
        if valid is not None:
            nll = torch.where(valid, nll, torch.zeros_like(nll))
            count = float(valid.sum())
        else:
            count = float(self.outer * self.inner)
        self.norm = normalizer(self.mode, self.outer, self.inner, count)
        self.prob, self.labels, self.valid = prob, safe, valid
        top[0].tensor.fill_(nll.sum() / self.norm)
        if len(top) > 1:
            top[1].tensor = prob.view(bottom[0].shape)

    def backward(self, top, propagate_down, bottom):
        refuse_backward(self, propagate_down, {1: "label"})
        if not propagate_down[0]:
            return
        dx = self.prob.clone()
        dx.scatter_add_(1, self.labels.unsqueeze(1),
                        torch.full_like(self.labels.unsqueeze(1), -1, dtype=dx.dtype))
        if self.valid is not None:
            dx.mul_(self.valid.unsqueeze(1))
        dx.mul_(top[0].diff_tensor / self.norm)
        bottom[0].diff_tensor = dx.view(bottom[0].shape)
