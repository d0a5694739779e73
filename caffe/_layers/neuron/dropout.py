"""Dropout (``dropout_param.dropout_ratio`` p, default 0.5).

TRAIN: each element is kept with probability 1 - p (drawn from the generator seeded by
``caffe.set_random_seed``) and scaled by 1 / (1 - p); dropped elements become 0. The mask,
stored already scaled, is kept for the backward: dx = dy * mask. TEST: the identity (y = x,
dx = dy). Top shaped like the bottom; may run in place."""

from __future__ import annotations

import torch

from caffe._common import generator_for
from caffe._layers.base import NeuronLayer
from caffe.errors import LayerSetupError
from caffe.layer import Phase
from caffe.registry import register_layer


@register_layer("Dropout")
class Dropout(NeuronLayer):
    replaces_tops = True
    replaces_bottom_diffs = True

    def setup(self, bottom, top):
        self.dropout_ratio = float(self.layer_param.dropout_param.dropout_ratio)
        if not 0 <= self.dropout_ratio < 1:
            raise LayerSetupError(
                f"Layer '{self.name}' (Dropout): dropout_ratio must be in [0, 1); got "
                f"{self.dropout_ratio:g}")
        self.scale = 1.0 / (1.0 - self.dropout_ratio)
        self._mask: torch.Tensor | None = None

    def forward(self, bottom, top):
        x = bottom[0].tensor
        in_place = top[0] is bottom[0]
        if self.phase != Phase.TRAIN:
            if not in_place:
                top[0].tensor = x.clone()
            return
        mask = self._mask
        if mask is None or mask.shape != x.shape or mask.dtype != x.dtype or \
                mask.device != x.device:
            mask = torch.empty_like(x)
        keep = 1.0 - self.dropout_ratio
        mask.bernoulli_(keep, generator=generator_for(x.device)).mul_(self.scale)
        self._mask = mask
        if in_place:
            x.mul_(mask)
        else:
            top[0].tensor = x * mask

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff_tensor
        if self.phase == Phase.TRAIN:
            bottom[0].diff_tensor = dy * self._mask
        elif top[0] is not bottom[0]:
            bottom[0].diff_tensor = dy.clone()
