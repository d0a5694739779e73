"""Accuracy: the fraction of items whose true label is among the ``top_k`` highest scores.

bottom[0]: scores (outer, C, inner...) with C at ``accuracy_param.axis``; bottom[1]: labels
(outer * inner). An item counts as correct when at most ``top_k`` classes score >= the true
class (ties count against it). top[0]: scalar accuracy (0 when no item is valid); optional
top[1]: per-class accuracy (C,), 0 for classes without items. ``ignore_label`` items are
skipped. No backward. The label range is checked as in SoftmaxWithLoss (on the CPU; elsewhere
only with CAFFE_CHECK_LABELS=1); nothing else reads a value back from the device."""

from __future__ import annotations

import torch

from caffe._common import tracing
from caffe._layers.loss.labels import (
    check_label_range,
    class_layout,
    int_labels,
    labels_checked_on,
    require_batch_axis,
    valid_labels,
)
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Accuracy")
class Accuracy(Layer):
    exact_num_bottom_blobs = 2
    min_top_blobs = 1
    max_top_blobs = 2
    has_backward = False

    def setup(self, bottom, top):
        p = self.layer_param.accuracy_param
        self.top_k = int(p.top_k)
        self.ignore_label = int(p.ignore_label) if p.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        require_batch_axis(self, bottom[0], "the prediction (bottom 0)")
        # scores as (outer, C[, inner]), labels as (outer, 1[, inner]): they gather along dim 1
        (self.axis, self.outer, self.channels, self.inner, self.view,
         self.label_view) = class_layout(self, bottom[0], bottom[1],
                                         self.layer_param.accuracy_param.axis, "axis")
        if self.top_k > self.channels:
            raise LayerSetupError(
                f"Layer '{self.name}' (Accuracy): top_k {self.top_k} must be at most the number "
                f"of classes {self.channels}")
        self.all_dims = tuple(range(len(self.label_view)))
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.channels,))

    def forward(self, bottom, top):
        x = bottom[0].tensor
        if x.shape != self.view:
            x = x.reshape(self.view)
        labels = int_labels(bottom[1].tensor.reshape(self.label_view))
        if labels_checked_on(labels.device):
            check_label_range(self, labels, self.channels, self.ignore_label)
        valid, index = valid_labels(labels, self.ignore_label)
        # the true class counts itself (unless its score is NaN), as in Caffe
        correct = (x >= x.gather(1, index)).sum(1, keepdim=True) <= self.top_k
        if valid is None and correct.numel() and not tracing():
            # every item counts: one kernel for the mean (ONNX has no mean of booleans)
            out = top[0].tensor
            torch.mean(correct, self.all_dims, dtype=out.dtype, out=out)
        else:
            count: torch.Tensor | int = max(self.outer * self.inner, 1)
            if valid is not None:
                correct &= valid
                count = valid.sum(dtype=x.dtype).clamp_min_(1)  # no valid item: 0 / 1
            torch.div(correct.sum(dtype=x.dtype), count, out=top[0].tensor)
        if len(top) > 1:
            top[1].tensor = self._per_class(x, index, valid, correct)

    def _per_class(self, x: torch.Tensor, index: torch.Tensor, valid: torch.Tensor | None,
                   correct: torch.Tensor) -> torch.Tensor:
        """Per class: correct items / items with that label (0 for a class without items),
        counted with index_add_ (no boolean indexing: no wait for the device)."""
        index = index.reshape(-1)
        items = (x.new_ones(()).expand(index.shape) if valid is None
                 else valid.reshape(-1).to(x.dtype))
        nums = x.new_zeros(self.channels).index_add_(0, index, items)
        hits = x.new_zeros(self.channels).index_add_(0, index, correct.reshape(-1).to(x.dtype))
        return hits.div_(nums.clamp_min_(1))
