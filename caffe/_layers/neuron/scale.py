"""Scale: y = x * s (+ b with ``bias_term``), with s (and b) broadcast over the bottom's axes
outside the span they cover.

One bottom: s is learned, of shape bottom.shape[axis:axis + num_axes] (``scale_param.axis``
default 1, ``num_axes`` default 1, -1 for every remaining axis), filled by
``scale_param.filler`` (default constant 1). Two bottoms: s is bottom[1], whose shape must match
bottom[0] from ``axis`` (a scalar matches anywhere). With ``bias_term`` a learned b of the same
span is the last param blob (blob 1, or blob 0 with two bottoms), filled by
``scale_param.bias_filler`` (default constant 0). Top shaped like bottom[0]; may run in place,
keeping a copy of the input for the backward as Caffe does.

Backward: dx = dy * s; ds = sum of dy * x over the uncovered axes; db = sum of dy. Caffe's
bookkeeping is reproduced: ds accumulates into a learned s except when s covers every element
or sits at axis 0 over several axes (outer 1, inner > 1, more than one scale), where Caffe
overwrites it; without propagation to bottom[0], its diff is left holding dy * x (the
scratch space Caffe uses), unless s covers every element or the layer runs in place."""

from __future__ import annotations

import torch

from caffe._common import tracing
from caffe._layers.neuron._operand import (
    affine_,
    keep_copy,
    learned_shape,
    operand_batch_axis,
    span,
)
from caffe.fillers import fill
from caffe.layer import PASS, Layer
from caffe.proto import caffe_pb2
from caffe.registry import register_layer


@register_layer("Scale")
class Scale(Layer):
    replaces_tops = True
    replaces_bottom_diffs = True
    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1
    allows_in_place = True
    writes_unrequested_diffs = True  # Caffe's scratch product in bottom 0's diff (backward)
    batch_axis_of = operand_batch_axis

    def setup(self, bottom, top):
        p = self.layer_param.scale_param
        shape = bottom[0].shape
        if len(bottom) == 1 and not self.blobs:
            self.blobs.add_blob(*learned_shape(self, shape, p.axis, p.num_axes))
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(
                type="constant", value=1.0)
            fill(self.blobs[0], filler)
        self.bias_term = bool(p.bias_term)
        if self.bias_term and len(self.blobs) + len(bottom) < 3:
            bias_axes = len(bottom[1].shape) if len(bottom) > 1 else p.num_axes
            self.blobs.add_blob(*learned_shape(self, shape, p.axis, bias_axes))
            fill(self.blobs[-1], p.bias_filler)
        self._span_key = None
        self._saved: torch.Tensor | None = None
        #: net index of the BatchNorm that applies this layer for it (``BatchNorm.fold_scale``)
        self.folded_at: int | None = None
        self.folded_into: Layer | None = None

    def add_scale_diff(self, ds: torch.Tensor) -> None:
        """Store ds in the learned s's diff by Caffe's rule: accumulated, but overwritten when
        s covers every element (outer * inner 1) or when outer is 1 with inner > 1 and more
        than one scale."""
        sp, diff = self.span, self.blobs[0].diff_tensor
        if sp.outer * sp.inner == 1 or (sp.outer == 1 and sp.inner > 1 and diff.numel() > 1):
            diff.copy_(ds)
        else:
            diff.add_(ds)

    def _scale_blob(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        axis = self.layer_param.scale_param.axis
        operand = self._scale_blob(bottom)
        key = (bottom[0].shape, operand.shape)
        if tracing() or key != self._span_key:
            self.span = span(self, bottom[0].shape, operand.shape, axis, "scale")
            if self.bias_term:
                self.bias_span = span(self, bottom[0].shape, self.blobs[-1].shape, axis, "bias")
            self._span_key = key
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        if self.folded_at is not None and PASS.fold_from <= self.folded_at < PASS.fold_to:
            return  # the BatchNorm before it has applied it
        x = bottom[0].tensor
        s = self.span.expand(self._scale_blob(bottom).tensor)
        in_place = top[0] is bottom[0]
        b = self.bias_span.expand(self.blobs[-1].tensor) if self.bias_term else None
        if in_place:
            if self._need_backward:
                self._saved = keep_copy(self._saved, x)
            affine_(x, s, b)
        else:
            top[0].tensor = torch.addcmul(b, x, s) if b is not None else x * s

    def backward(self, top, propagate_down, bottom):
        bn = self.folded_into
        if bn is not None and bn.applied_scale:  # this forward was the BatchNorm's
            if PASS.fold_from <= self.folded_at < PASS.fold_to:
                return  # and so is this backward
            # a backward that stops between the two: the input is the BatchNorm's output
            self._saved = bn.normalized().view(bottom[0].shape)
        dy = top[0].diff_tensor
        in_place = top[0] is bottom[0]
        if self.bias_term and self._param_propagate_down[-1]:
            self.blobs[-1].diff_tensor.add_(self.bias_span.reduce(dy))
        learned = len(bottom) == 1
        operand = self._scale_blob(bottom)
        if (learned and self._param_propagate_down[0]) or (not learned and propagate_down[1]):
            product = self._saved.mul_(dy) if in_place else dy * bottom[0].tensor
            eltwise = bottom[0].count == operand.count
            ds = self.span.reduce(product)
            if not (eltwise or in_place or propagate_down[0]):
                bottom[0].diff_tensor = product
            if not learned:  # in place, an elementwise ds is a view of the kept copy
                operand.diff_tensor = ds.clone() if in_place and eltwise else ds
            else:
                self.add_scale_diff(ds)
        if propagate_down[0]:
            bottom[0].diff_tensor = dy * self.span.expand(operand.tensor)
