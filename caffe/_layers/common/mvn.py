"""MVN (mean-variance normalisation): top = (bottom - mean) / (std + eps), or bottom - mean
with ``normalize_variance: false``.

Mean and (biased) std are taken per sample and channel over H x W, or per sample over
C x H x W with ``across_channels``. eps is added to the std, after the square root (Caffe's
placement). bottom: up to 4 axes; top: (num, channels, height, width), the legacy 4-D shape of
the bottom, as Caffe reshapes it."""

from __future__ import annotations

import torch

from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("MVN")
class MVN(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    allows_in_place = True

    def setup(self, bottom, top):
        p = self.layer_param.mvn_param
        self.normalize_variance = bool(p.normalize_variance)
        self.across_channels = bool(p.across_channels)
        self.eps = float(p.eps)

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes > 4:
            raise LayerSetupError(f"Layer '{self.name}' (MVN): input must have at most 4 axes "
                                  f"(num, channels, height, width), got shape {b.shape}")
        top[0].reshape(b.num, b.channels, b.height, b.width)
        self.rows = b.num if self.across_channels else b.num * b.channels

    def forward(self, bottom, top):
        x = bottom[0].tensor.reshape(self.rows, -1)
        if self.normalize_variance:
            var, mean = torch.var_mean(x, dim=1, keepdim=True, correction=0)
            self.denom = var.sqrt_().add_(self.eps)
            y = (x - mean).div_(self.denom)
        else:
            y = x - x.mean(dim=1, keepdim=True)
        top[0].tensor = y.view(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        # Caffe's formula: (dy - mean(dy) - y mean(dy y)) / (std + eps), from the top data
        if not propagate_down[0]:
            return
        dy = top[0].diff_tensor.reshape(self.rows, -1)
        dx = dy - dy.mean(dim=1, keepdim=True)
        if self.normalize_variance:
            y = top[0].tensor.reshape(self.rows, -1)
            dx = dx.sub_(y * (dy * y).mean(dim=1, keepdim=True)).div_(self.denom)
        bottom[0].diff_tensor = dx.view(bottom[0].shape)
