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
from caffe.errors import LayerSetupError
from caffe.registry import register_layer

FLT_MIN = 1.17549435e-38


def check_labels(layer, labels: torch.Tensor, num_classes: int, ignore) -> None:
    """Raise naming the layer if a (non-ignored) label lies outside [0, num_classes)."""
    valid = labels if ignore is None else labels[labels != ignore]
    if valid.numel() and (bool((valid < 0).any()) or bool((valid >= num_classes).any())):
        bad = valid[(valid < 0) | (valid >= num_classes)][0]
        raise LayerSetupError(
            f"Layer '{layer.name}' ({layer.type}): label {int(bad)} is out of range; labels "
            f"must lie in [0, {num_classes})" + ("" if ignore is None else
                                                 f" or equal ignore_label {ignore}"))


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
        labels = bottom[1].tensor.reshape(self.outer, self.inner).to(torch.long)
        check_labels(self, labels, self.channels, self.ignore_label)
        if self.ignore_label is not None:
            valid = labels != self.ignore_label
            safe = torch.where(valid, labels, torch.zeros_like(labels))
        else:
            valid, safe = None, labels
        p_true = prob.gather(1, safe.unsqueeze(1)).squeeze(1)
        nll = -torch.log(torch.clamp(p_true, min=FLT_MIN))
        if valid is not None:
            nll = nll * valid
            count = float(valid.sum())
        else:
            count = float(self.outer * self.inner)
        self.norm = normalizer(self.mode, self.outer, self.inner, count)
        self.prob, self.labels, self.valid = prob, safe, valid
        top[0].tensor.fill_(nll.sum() / self.norm)
        if len(top) > 1:
            top[1].tensor = prob.view(bottom[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise LayerSetupError(
                f"Layer '{self.name}' (SoftmaxWithLoss) cannot backpropagate to the labels; "
                "set propagate_down: true and propagate_down: false")
        if not propagate_down[0]:
            return
        dx = self.prob.clone()
        dx.scatter_add_(1, self.labels.unsqueeze(1),
                        torch.full_like(self.labels.unsqueeze(1), -1, dtype=dx.dtype))
        if self.valid is not None:
            dx.mul_(self.valid.unsqueeze(1))
        dx.mul_(top[0].diff_tensor / self.norm)
        bottom[0].diff_tensor = dx.view(bottom[0].shape)
