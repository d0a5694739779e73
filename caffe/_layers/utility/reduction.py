"""Reduction: reduce the trailing axes from ``axis`` on to one number per leading index.
bottom (d0, ..., dn) -> top (d0, ..., d_{axis-1}) (0-d when axis is 0). SUM: sum x; ASUM:
sum |x|; SUMSQ: sum x^2; MEAN: sum x / count; then times ``coeff``. Backward: d x = coeff * dy
times 1 (SUM), 1/count (MEAN), sign(x) (ASUM) or 2 x (SUMSQ).

The SUM/MEAN bottom diff is written out dense, as Caffe does, although autograd hands out the
stride-0 ``expand`` of dy for free. A blob diff must take NumPy writes (``blob.diff[...] = g``
by the user before a partial backward, or by an in-place Python layer below): on an expanded
tensor every element of a reduced row is one memory location, so such a write would silently
keep only the last value of each row on the CPU (and fail on the way back to a GPU). Handing
out the expand becomes safe once NumPy ``.diff`` access materialises such a diff first
(caffe/blob.py)."""

from __future__ import annotations

import math

import torch

from caffe._layers.utility._shared import canonical_axis
from caffe.layer import Layer
from caffe.proto import caffe_pb2
from caffe.registry import register_layer

RP = caffe_pb2.ReductionParameter


@register_layer("Reduction")
class Reduction(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.layer_param.reduction_param
        self.op = p.operation
        self.coeff = float(p.coeff)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = canonical_axis(self, self.layer_param.reduction_param.axis, shape,
                              "reduction_param.axis")
        self.num = math.prod(shape[:axis])
        self.dim = math.prod(shape[axis:])
        self.scale = self.coeff / max(self.dim, 1) if self.op == RP.MEAN else self.coeff
        top[0].reshape(shape[:axis])

    def forward(self, bottom, top):
        x = bottom[0].tensor.reshape(self.num, self.dim)
        if self.op == RP.ASUM:
            x = x.abs()
        elif self.op == RP.SUMSQ:
            x = x * x
        top[0].tensor = (x.sum(1) * self.scale).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        g = top[0].diff_tensor.reshape(self.num, 1) * self.scale
        x = bottom[0].tensor.reshape(self.num, self.dim)
        if self.op == RP.ASUM:
            dx = torch.sign(x) * g
        elif self.op == RP.SUMSQ:
            dx = x * (2 * g)
        else:
            dx = g.expand(self.num, self.dim)
        bottom[0].diff_tensor = dx.contiguous().reshape(bottom[0].shape)
