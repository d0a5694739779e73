"""SoftmaxWithLoss: softmax over ``axis`` followed by the multinomial logistic loss.

bottom[0]: scores (outer, C, inner...) with C at ``softmax_param.axis``; bottom[1]: labels,
outer * inner integer values (stored as float). loss = -sum_valid log(max(p[label], FLT_MIN))
/ normalizer (``loss_param.normalization``: VALID (default), BATCH_SIZE, FULL, NONE; or the
legacy ``normalize``). Labels equal to ``ignore_label`` contribute nothing. Backward:
dx = (p - onehot(label)) * loss_weight / normalizer, zero at ignored positions. An optional
second top holds the probabilities.

The label range is checked on the CPU; on other devices only when the environment variable
CAFFE_CHECK_LABELS=1 is set (the check would wait for the device every forward)."""

from __future__ import annotations

import math

import torch

from caffe._layers.base import LossLayer, normalization_mode, normalizer
from caffe._layers.loss.labels import (
    check_labels,
    int_labels,
    labels_checked_on,
    refuse_backward,
    require_batch_axis,
)
from caffe._layers.neuron.softmax import softmax_view
from caffe.errors import LayerSetupError
from caffe.proto import caffe_pb2
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
        require_batch_axis(self, bottom[0], "the prediction (bottom 0)")
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
        x = bottom[0].tensor
        prob = torch.softmax(x.reshape(softmax_view(x.shape, self.axis)), dim=1)
        if prob.dim() == 2:
            prob = prob.unsqueeze(2)  # (outer, C, 1): a view
        labels = int_labels(bottom[1].tensor).reshape(self.outer, self.inner)
        if labels_checked_on(labels.device):
            check_label_range(self, labels, self.channels, self.ignore_label)
        valid, safe = valid_labels(labels, self.ignore_label)
        index = safe.unsqueeze(1)
        p_true = prob.gather(1, index)
        log_p = torch.log(torch.clamp(p_true, min=FLT_MIN))
        if valid is not None:
            log_p = torch.where(valid.unsqueeze(1), log_p, torch.zeros_like(log_p))
        self.norm = valid_normalizer(self.mode, self.outer, self.inner, valid, x.dtype)
        self.prob, self.index, self.p_true, self.valid = prob, index, p_true, valid
        top[0].tensor.fill_(log_p.sum() / -self.norm)
        if len(top) > 1:
            top[1].tensor = prob.view(x.shape)

    def backward(self, top, propagate_down, bottom):
        refuse_backward(self, propagate_down, {1: "label"})
        if not propagate_down[0]:
            return
        # p - 1 at the label (the gathered p_true - 1 is that same number)
        dx = self.prob.clone().scatter_(1, self.index, self.p_true - 1)
        scale = top[0].diff_tensor / self.norm
        # one full pass: the ignored positions' zeros ride on the (outer, 1, inner) factor
        dx.mul_(scale if self.valid is None else self.valid.unsqueeze(1) * scale)
        bottom[0].diff_tensor = dx.view(bottom[0].shape)


def check_label_range(layer, labels: torch.Tensor, num_classes: int,
                      ignore: int | None) -> None:
    """``check_labels`` behind one cheap min/max look: labels all in [0, num_classes) need no
    other test, whatever the ignore label."""
    if labels.numel():
        lo, hi = torch.aminmax(labels)
        if int(lo) >= 0 and int(hi) < num_classes:
            return
    check_labels(layer, labels, num_classes, ignore)


def valid_labels(labels: torch.Tensor,
                 ignore: int | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(mask of the labels that count, or None when nothing is ignored; the labels with the
    ignored ones replaced by 0, safe to index with)."""
    if ignore is None:
        return None, labels
    valid = labels != ignore
    return valid, labels.masked_fill(~valid, 0)


def valid_normalizer(mode: int, outer: int, inner: int, valid: torch.Tensor | None,
                     dtype: torch.dtype) -> float | torch.Tensor:
    """Caffe's normalizer; with ignored labels in VALID mode the count of valid labels stays a
    tensor (no wait for the device), clamped to at least 1 like ``normalizer``."""
    if valid is not None and mode == caffe_pb2.LossParameter.VALID:
        return valid.sum().clamp_min_(1).to(dtype)
    return normalizer(mode, outer, inner, -1)
