"""LRN (local response normalisation): top = bottom * scale ^ -beta.

ACROSS_CHANNELS: scale = k + alpha / n * (sum of bottom^2 over the n channels centred on c,
zero beyond the first and last channel). WITHIN_CHANNEL (Caffe builds it from AVE pooling
with pad (n - 1) / 2 and a Power layer): scale = 1 + alpha / n^2 * (sum of bottom^2 over the
n x n square centred on (h, w), zero-padded); ``k`` is not used there. n = local_size, odd.

bottom and top: (N, C, H, W)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.proto import caffe_pb2
from caffe.registry import register_layer


@register_layer("LRN")
class LRN(Layer):
    replaces_tops = True
    replaces_bottom_diffs = True
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.layer_param.lrn_param
        self.size = int(p.local_size)
        if self.size % 2 == 0:
            raise LayerSetupError(f"Layer '{self.name}' (LRN): local_size must be odd, got "
                                  f"{self.size}")
        self.alpha = float(p.alpha)
        self.beta = float(p.beta)
        self.across = p.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS
        # WITHIN_CHANNEL's Power layer shifts by 1, whatever k says
        self.k = float(p.k) if self.across else 1.0

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise LayerSetupError(f"Layer '{self.name}' (LRN): input must have 4 axes (num, "
                                  f"channels, height, width), got shape {shape}")
        top[0].reshape(shape)

    def _window_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean of ``t`` over each element's window (zeros outside); the divisor is always the
        full window size, n or n^2, as in Caffe."""
        pad = (self.size - 1) // 2
        if self.across:
            n, c, h, w = t.shape
            m = F.avg_pool2d(t.reshape(n, 1, c, h * w), (self.size, 1), 1, (pad, 0))
            return m.view(n, c, h, w)
        return F.avg_pool2d(t, self.size, 1, pad)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        self.scale = self._window_mean(x * x).mul_(self.alpha).add_(self.k)
        top[0].tensor = x * self.scale.pow(-self.beta)

    def backward(self, top, propagate_down, bottom):
        # d/dx_i = dy_i scale_i^-beta - 2 alpha beta x_i * mean over i's window of dy y / scale
        if not propagate_down[0]:
            return
        x, y, dy = bottom[0].tensor, top[0].tensor, top[0].diff_tensor
        ratio = self._window_mean(dy * y / self.scale)
        bottom[0].diff_tensor = torch.addcmul(dy * self.scale.pow(-self.beta), x, ratio,
                                              value=-2.0 * self.alpha * self.beta)
