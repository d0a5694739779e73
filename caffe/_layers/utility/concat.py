"""Concat: join the bottoms along ``axis`` (legacy ``concat_dim``, non-negative). Every bottom
has the same shape except along that axis; top dim there = the sum of the bottoms'. Backward
hands each bottom its slice of the top diff (a view of it where the slice is contiguous)."""

from __future__ import annotations

import torch

from caffe._layers.utility._shared import bottom_name, check_not_both, legacy_or_axis, where
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Concat")
class Concat(Layer):
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
                # a contiguous slice (axis 0, or only 1s before the axis) is handed out as a
                # view: diffs are replaced, never written into. Others are copied, as a blob's
                # diff must be viewable in any shape of its count.
                b.diff_tensor = piece.contiguous()
