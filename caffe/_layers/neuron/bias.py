"""Bias: y = x + b, with b broadcast over the bottom's axes outside the span it covers.

One bottom: b is learned, of shape bottom.shape[axis:axis + num_axes] (``bias_param.axis``
default 1, ``num_axes`` default 1, -1 for every remaining axis), filled by
``bias_param.filler`` (default constant 0). Two bottoms: b is bottom[1], whose shape must match
bottom[0] from ``axis`` (a scalar bottom[1] matches anywhere). Top shaped like bottom[0]; may run
in place.

Backward: dx = dy; db = dy summed over the uncovered axes (accumulated into the learned blob,
written to bottom[1]'s diff)."""

from __future__ import annotations

from caffe._common import tracing
from caffe._layers.neuron._operand import learned_shape, operand_batch_axis, span
from caffe.fillers import fill
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Bias")
class Bias(Layer):
    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1
    allows_in_place = True
    batch_axis_of = operand_batch_axis

    def setup(self, bottom, top):
        p = self.layer_param.bias_param
        if len(bottom) == 1 and not self.blobs:
            self.blobs.add_blob(*learned_shape(self, bottom[0].shape, p.axis, p.num_axes))
            fill(self.blobs[0], p.filler)
        self._span_key = None

    def reshape(self, bottom, top):
        operand = bottom[1] if len(bottom) > 1 else self.blobs[0]
        key = (bottom[0].shape, operand.shape)
        if tracing() or key != self._span_key:
            self.span = span(self, bottom[0].shape, operand.shape,
                             self.layer_param.bias_param.axis, "bias")
            self._span_key = key
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        b = self.span.expand((bottom[1] if len(bottom) > 1 else self.blobs[0]).tensor)
        if top[0] is bottom[0]:
            x.add_(b)
        else:
            top[0].tensor = x + b

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff_tensor
        # dy itself, not a copy (also as db when b covers every axis): diffs are replaced,
        # never written into, so sharing them is safe
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff_tensor = dy
        if len(bottom) > 1:
            if propagate_down[1]:
                bottom[1].diff_tensor = self.span.reduce(dy)
        elif self._param_propagate_down[0]:
            self.blobs[0].diff_tensor.add_(self.span.reduce(dy))
