"""InnerProduct (fully connected): top = bottom_flat @ W^T + b.

bottom: (d0, ..., d_{axis-1}, d_axis, ...) flattened from ``axis`` to K inputs; top:
(d0, ..., d_{axis-1}, num_output). W is (num_output, K), or (K, num_output) with
``transpose: true``; b is (num_output,)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from caffe._common import low_precision as lp
from caffe.errors import LayerSetupError
from caffe.fillers import fill
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("InnerProduct")
class InnerProduct(Layer):
    replaces_tops = True
    replaces_bottom_diffs = True
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.layer_param.inner_product_param
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            raise LayerSetupError(
                f"Layer '{self.name}' (InnerProduct): num_output must be positive, got "
                f"{p.num_output}")
        self.bias_term = bool(p.bias_term)
        self.transpose = bool(p.transpose)
        self.axis = bottom[0].canonical_axis(p.axis)
        self.K = bottom[0].count_range(self.axis)
        if self.blobs:
            return
        wshape = (self.K, self.num_output) if self.transpose else (self.num_output, self.K)
        self.blobs.add_blob(*wshape)
        fill(self.blobs[0], p.weight_filler)
        if self.bias_term:
            self.blobs.add_blob(self.num_output)
            fill(self.blobs[1], p.bias_filler)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        k = math.prod(shape[self.axis:])
        if k != self.K:
            raise LayerSetupError(
                f"Layer '{self.name}' (InnerProduct): input size incompatible with inner "
                f"product parameters: bottom {shape} gives {k} inputs from axis {self.axis}, "
                f"the weights expect {self.K}")
        self.M = math.prod(shape[:self.axis])
        top[0].reshape(shape[:self.axis] + (self.num_output,))
        # (M, K) bottoms and (M, num_output) tops need no views (a microsecond or two of
        # Python each, which launch-bound GPU passes pay per layer)
        self._flat_out = self.axis == 1
        self._flat_in = self._flat_out and len(shape) == 2

    def forward(self, bottom, top):
        x = bottom[0].tensor
        if not self._flat_in:
            x = x.reshape(self.M, self.K)
        w = lp(self.blobs[0].tensor)
        b = lp(self.blobs[1].tensor) if self.bias_term else None
        if self.transpose:
            y = lp(x) @ w if b is None else torch.addmm(b, lp(x), w)
        else:  # addmm(b, x, w^T), as linear computes it
            y = F.linear(lp(x), w, b)
        if y.dtype != x.dtype:
            y = y.to(x.dtype)
        top[0].tensor = y if self._flat_out else y.view(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff_tensor
        if not self._flat_out:
            dy = dy.reshape(self.M, self.num_output)
        x = bottom[0].tensor
        if not self._flat_in:
            x = x.reshape(self.M, self.K)
        dy_c, x_c = lp(dy), lp(x)  # bfloat16 under set_precision("bf16"), else themselves
        if self._param_propagate_down[0]:
            g = self.blobs[0].diff_tensor
            lhs, rhs = (x_c.t(), dy_c) if self.transpose else (dy_c.t(), x_c)
            if lhs.dtype == g.dtype:
                g.addmm_(lhs, rhs)
            else:
                g.add_(lhs @ rhs)
        if self.bias_term and self._param_propagate_down[1]:
            self.blobs[1].diff_tensor.add_(dy.sum(0))
        if propagate_down[0]:
            w = lp(self.blobs[0].tensor)
            dx = dy_c @ (w.t() if self.transpose else w)
            if dx.dtype != dy.dtype:
                dx = dx.to(dy.dtype)
            bottom[0].diff_tensor = dx if self._flat_in else dx.view(bottom[0].shape)
