"""Slice: cut the bottom along ``axis`` (legacy ``slice_dim``, non-negative) into the tops.
With ``slice_point`` p1 < p2 < ... (one fewer than the tops, within the axis) top i gets
[p_i, p_{i+1}); without, the axis is split into equal parts. Backward joins the tops' diffs.

Forward copies each part into its own tensor, as Caffe does, unless ``tops_are_views`` is set.
A view (``torch.split``) would be cheaper, but a top must not share the bottom's memory when
anything writes into one of them after this forward: a layer running in place on a top (a ReLU
would overwrite the bottom, which e.g. a Sigmoid producer needs for its backward, and which
the user reads back), a Python layer or the user writing ``.data``, or an in-place layer on
a Split sibling of the bottom (it would change the top after the slice was taken). Only the
net can see that; it may set ``tops_are_views = True`` on a Slice whose bottom and tops (and
the blobs sharing their memory through Split, Flatten and Reshape) no layer writes in place.
The default is the safe copy."""

from __future__ import annotations

import torch

from caffe._layers.utility._shared import check_not_both, legacy_or_axis, where
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Slice")
class Slice(Layer):
    exact_num_bottom_blobs = 1
    min_top_blobs = 1
    #: hand out views of the bottom as tops (set by the net when no one writes into them)
    tops_are_views = False

    def setup(self, bottom, top):
        check_not_both(self, self.layer_param.slice_param, "slice_dim")

    def reshape(self, bottom, top):
        p = self.layer_param.slice_param
        shape = bottom[0].shape
        self.axis = legacy_or_axis(self, p, "slice_dim", shape)
        dim = shape[self.axis]
        points = list(p.slice_point)
        if points:
            increasing = all(a < b for a, b in zip([0] + points, points))
            if len(points) != len(top) - 1 or not increasing or points[-1] > dim:
                raise LayerSetupError(
                    f"{where(self)}: slice_param.slice_point {points} is invalid for {len(top)} "
                    f"tops and axis {self.axis} of size {dim} (bottom shape {shape}); allowed: "
                    f"{len(top) - 1} strictly increasing points between 1 and {dim}")
            self.sizes = [b - a for a, b in zip([0] + points, points + [dim])]
        else:
            if dim % len(top):
                raise LayerSetupError(
                    f"{where(self)}: without slice_param.slice_point the axis {self.axis} of "
                    f"size {dim} (bottom shape {shape}) must split evenly into {len(top)} tops")
            self.sizes = [dim // len(top)] * len(top)
        for t, size in zip(top, self.sizes):
            t.reshape(shape[:self.axis] + (size,) + shape[self.axis + 1:])

    def forward(self, bottom, top):
        pieces = bottom[0].tensor.split(self.sizes, self.axis)
        for t, piece in zip(top, pieces):
            t.tensor = piece if self.tops_are_views else piece.clone(
                memory_format=torch.contiguous_format)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff_tensor = torch.cat([t.diff_tensor for t in top], self.axis)
