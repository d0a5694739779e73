"""Eltwise: combine bottoms of one shape element by element. PROD: y = x0 * x1 * ...; SUM:
y = sum_i coeff_i * x_i (coeff defaults to 1); MAX: y = max_i x_i (ties between x0 and x1 go
to x1, later bottoms win only when strictly greater). Backward: PROD d x_i = dy * prod_{j!=i}
x_j (``stable_prod_grad``, else dy * y / x_i); SUM d x_i = coeff_i dy; MAX routes dy to the
bottom that won."""

from __future__ import annotations

import torch

from caffe._layers.utility._shared import bottom_name, where
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.proto import caffe_pb2
from caffe.registry import register_layer

EP = caffe_pb2.EltwiseParameter


@register_layer("Eltwise")
class Eltwise(Layer):
    replaces_tops = True
    replaces_bottom_diffs = True
    min_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.layer_param.eltwise_param
        self.op = p.operation
        coeff = list(p.coeff)
        if coeff and len(coeff) != len(bottom):
            raise LayerSetupError(
                f"{where(self)}: eltwise_param.coeff has {len(coeff)} values {coeff} for "
                f"{len(bottom)} bottoms; give one coefficient per bottom or none")
        if coeff and self.op != EP.SUM:
            raise LayerSetupError(
                f"{where(self)}: eltwise_param.coeff {coeff} is only allowed with operation "
                f"SUM, not {EP.EltwiseOp.Name(self.op)}")
        self.coeff = coeff or [1.0] * len(bottom)
        self.stable_prod_grad = bool(p.stable_prod_grad)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != shape:
                raise LayerSetupError(
                    f"{where(self)}: bottom {bottom_name(self, i)} has shape {b.shape} but "
                    f"bottom {bottom_name(self, 0)} has shape {shape}; all bottoms must have "
                    "the same shape")
        top[0].reshape(shape)

    def forward(self, bottom, top):
        xs = [b.tensor for b in bottom]
        if self.op == EP.PROD:
            y = xs[0] * xs[1]
            for x in xs[2:]:
                y = y * x
        elif self.op == EP.SUM:
            c0 = self.coeff[0]
            y = torch.add(xs[0] if c0 == 1 else xs[0] * c0, xs[1], alpha=self.coeff[1])
            for c, x in zip(self.coeff[2:], xs[2:]):
                y.add_(x, alpha=c)
        else:
            first = xs[0] > xs[1]
            y = torch.where(first, xs[0], xs[1])
            self.argmax = (~first).to(torch.int32)
            for i, x in enumerate(xs[2:], 2):
                wins = x > y
                y = torch.where(wins, x, y)
                self.argmax.masked_fill_(wins, i)
        top[0].tensor = y

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff_tensor
        for i, (b, need) in enumerate(zip(bottom, propagate_down)):
            if not need:
                continue
            if self.op == EP.PROD:
                if self.stable_prod_grad:
                    others = [o.tensor for j, o in enumerate(bottom) if j != i]
                    g = others[0]
                    for x in others[1:]:
                        g = g * x
                else:
                    g = top[0].tensor / b.tensor
                dx = g * dy
            elif self.op == EP.SUM:
                # coeff 1: dy itself (diffs are replaced, never written into, so sharing it
                # with the top and the other bottoms is safe)
                dx = dy if self.coeff[i] == 1 else dy * self.coeff[i]
            else:
                dx = dy * (self.argmax == i)
            b.diff_tensor = dx
