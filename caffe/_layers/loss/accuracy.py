"""Accuracy: the fraction of items whose true label is among the ``top_k`` highest scores.

bottom[0]: scores (outer, C, inner...) with C at ``accuracy_param.axis``; bottom[1]: labels
(outer * inner). An item counts as correct when at most ``top_k`` classes score >= the true
class (ties count against it). top[0]: scalar accuracy (0 when no item is valid); optional
top[1]: per-class accuracy (C,), 0 for classes without items. ``ignore_label`` items are
skipped. No backward."""

from __future__ import annotations

import math

import torch

from caffe._layers.loss.labels import check_labels, int_labels, require_batch_axis
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
        shape = bottom[0].shape
        require_batch_axis(self, bottom[0], "the prediction (bottom 0)")
        self.axis = bottom[0].canonical_axis(self.layer_param.accuracy_param.axis)
        self.outer = math.prod(shape[:self.axis])
        self.channels = shape[self.axis]
        self.inner = math.prod(shape[self.axis + 1:])
        if self.outer * self.inner != bottom[1].count:
            raise LayerSetupError(
                f"Layer '{self.name}' (Accuracy): number of labels must match number of "
                f"predictions; scores {shape} with axis {self.axis} need "
                f"{self.outer * self.inner} labels, got {bottom[1].count} (shape "
                f"{bottom[1].shape})")
        if self.top_k > self.channels:
            raise LayerSetupError(
                f"Layer '{self.name}' (Accuracy): top_k {self.top_k} must be at most the number "
                f"of classes {self.channels}")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.channels,))

    def forward(self, bottom, top):
        x = bottom[0].tensor.reshape(self.outer, self.channels, self.inner)
        labels = int_labels(bottom[1].tensor).reshape(self.outer, self.inner)
        check_labels(self, labels, self.channels, self.ignore_label)
        valid = (torch.ones_like(labels, dtype=torch.bool) if self.ignore_label is None
                 else labels != self.ignore_label)
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        true_score = x.gather(1, safe.unsqueeze(1))
        better = (x >= true_score).sum(1)
        correct = (better <= self.top_k) & valid
        count = valid.sum()
        top[0].tensor.fill_(torch.where(count > 0, correct.sum() / count.clamp_min(1), 0.0))
        if len(top) > 1:
            ones = torch.ones_like(safe, dtype=x.dtype)
            nums = torch.zeros(self.channels, dtype=x.dtype, device=x.device)
            hits = torch.zeros(self.channels, dtype=x.dtype, device=x.device)
            nums.index_put_((safe[valid],), ones[valid], accumulate=True)
            hits.index_put_((safe[correct],), ones[correct], accumulate=True)
            top[1].tensor = torch.where(nums > 0, hits / nums.clamp_min(1), torch.zeros_like(hits))
