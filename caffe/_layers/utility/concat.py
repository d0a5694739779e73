"""Concat: join the bottoms along ``axis`` (legacy ``concat_dim``, non-negative). Every bottom
has the same shape except along that axis; top dim there = the sum of the bottoms'.

Backward hands each bottom its slice of the top diff as a view (``narrow``; strided when
the axis is not the first non-1 dim), as autograd does for ``torch.cat``; Caffe copies. This
is safe because a blob diff is only ever replaced, never written into, by the layers:
- the slice's only reader is the bottom's producer (a bottom used twice goes through a Split,
  whose sum is a new tensor); the top diff is not read again in this backward, and the next
  backward replaces the top diff before it replaces these views;
- the views keep the top diff's memory alive (no reuse while they exist);
- strided diffs are fine for torch ops, for ``Blob.reshape`` (it copies when it must) and for
  NumPy reads; ``blob.diff[...] = x`` writes through into the right elements.
What differs from Caffe: an in-place Python layer (or the user) writing ``.diff`` of a bottom
also changes the top's already-used diff, and on the CPU a write through a NumPy *reshape* of
a strided diff lands in a copy (NumPy semantics). Eltwise SUM and Split already share diffs
the same way; the cure for all of them is for NumPy ``.diff`` access to hand out a private
dense copy of a shared or strided diff (caffe/blob.py)."""

from __future__ import annotations

import torch

from caffe._layers.utility._shared import bottom_name, check_not_both, legacy_or_axis, where
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Concat")
class Concat(Layer):
    replaces_tops = True
    replaces_bottom_diffs = True
    min_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        check_not_both(self, self.layer_param.concat_param, "concat_dim")

    def reshape(self, bottom, top):
        first = bottom[0].shape
        self.axis = legacy_or_axis(self, self.layer_param.concat_param, "concat_dim", first)
        for i, b in enumerate(bottom[1:], 1):
            s = b.shape
            if len(s) != len(first) or s[:self.axis] + s[self.axis + 1:] != \
                    first[:self.axis] + first[self.axis + 1:]:
                raise LayerSetupError(
                    f"{where(self)}: bottom {bottom_name(self, i)} has shape {s} but bottom "
                    f"{bottom_name(self, 0)} has shape {first}; all bottoms must have the same "
                    f"number of axes and the same dims except along the concat axis "
                    f"{self.axis}")
        self.sizes = [b.shape[self.axis] for b in bottom]
        top[0].reshape(first[:self.axis] + (sum(self.sizes),) + first[self.axis + 1:])

    def forward(self, bottom, top):
        top[0].tensor = torch.cat([b.tensor for b in bottom], self.axis)

    def backward(self, top, propagate_down, bottom):
        pieces = top[0].diff_tensor.split(self.sizes, self.axis)
        for b, piece, need in zip(bottom, pieces, propagate_down):
            if need:
                b.diff_tensor = piece
