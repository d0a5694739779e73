"""ContrastiveLoss: pull similar pairs together, push dissimilar ones beyond a margin.

bottom[0], bottom[1]: features a, b (N, C) (height and width 1); bottom[2]: similarity y (N)
(nonzero int(y) = similar). With d2 = ||a - b||^2 and m = ``margin``:
loss = sum_n [y_n ? d2 : max(m - sqrt(d2), 0)^2] / (2N), or with ``legacy_version``
max(m - d2, 0) in place of the squared hinge. Backward (w = loss weight):
da = -db = w / N * c_n * (a - b), c_n = 1 for similar pairs; for dissimilar pairs inside the
margin c_n = -(m - d) / (d + 1e-4) (d = sqrt(d2)), or -1 with ``legacy_version``; else 0.
Nothing is propagated to y."""

from __future__ import annotations

import torch

from caffe._layers.base import LossLayer
from caffe._layers.loss.labels import (
    int_labels,
    legacy_shape,
    require_batch_axis,
    require_one_per_item,
)
from caffe.errors import LayerSetupError
from caffe.registry import register_layer


@register_layer("ContrastiveLoss")
class ContrastiveLoss(LossLayer):
    exact_num_bottom_blobs = 3
    no_force_backward_bottoms = (2,)

    def setup(self, bottom, top):
        p = self.layer_param.contrastive_loss_param
        self.margin = float(p.margin)
        self.legacy = bool(p.legacy_version)

    def reshape(self, bottom, top):
        require_batch_axis(self, bottom[0], "the first feature (bottom 0)")
        super().reshape(bottom, top)
        dims = [legacy_shape(self, bottom[i], f"bottom {i}") for i in (0, 1)]
        if dims[0][1] != dims[1][1] or any(d[2:] != (1, 1) for d in dims):
            raise LayerSetupError(
                f"Layer '{self.name}' (ContrastiveLoss): both features must be (N, C) with the "
                f"same C (height and width 1); got shapes {bottom[0].shape} and "
                f"{bottom[1].shape}")
        require_one_per_item(self, bottom[2], "the similarity label (bottom 2)")
        if bottom[2].count != bottom[0].shape[0]:
            raise LayerSetupError(
                f"Layer '{self.name}' (ContrastiveLoss): need one similarity label per pair: "
                f"{bottom[0].shape[0]} pairs, got {bottom[2].count} labels")

    def forward(self, bottom, top):
        num = bottom[0].shape[0]
        self.diff = bottom[0].tensor.reshape(num, -1) - bottom[1].tensor.reshape(num, -1)
        self.dist_sq = (self.diff * self.diff).sum(1)
        self.similar = int_labels(bottom[2].tensor.reshape(-1)) != 0
        if self.legacy:
            far = torch.clamp_min(self.margin - self.dist_sq, 0)
        else:
            far = torch.clamp_min(self.margin - torch.sqrt(self.dist_sq), 0) ** 2
        per_pair = torch.where(self.similar, self.dist_sq, far)
        top[0].tensor.fill_(per_pair.sum() / num / 2)

    def backward(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        num = bottom[0].shape[0]
        if self.legacy:
            inside = self.margin - self.dist_sq
            far = -torch.ones_like(inside)
        else:
            dist = torch.sqrt(self.dist_sq)
            inside = self.margin - dist
            far = -inside / (dist + 1e-4)
        coef = torch.where(self.similar, torch.ones_like(far),
                           torch.where(inside > 0, far, torch.zeros_like(far)))
        grad = self.diff * (coef * (top[0].diff_tensor / num)).unsqueeze(1)
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                bottom[i].diff_tensor = (grad * sign).reshape(bottom[i].shape)
