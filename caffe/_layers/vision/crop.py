"""Crop: cut bottom 0 to the shape of bottom 1 on the axes from ``axis`` on (earlier axes are
kept). ``offset``: none (all 0), one for every cropped axis, or one per cropped axis; each crop
must fit: offset + size of bottom 1 <= size of bottom 0. Backward puts the top diff at the crop
position in a zero diff of bottom 0; bottom 1 only gives the shape and gets no diff."""

from __future__ import annotations

import torch

from caffe._layers.utility._shared import canonical_axis, where
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Crop")
class Crop(Layer):
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.layer_param.crop_param
        shape = bottom[0].shape
        self.axis = canonical_axis(self, p.axis, shape, "crop_param.axis")
        offsets = list(p.offset)
        cropped = len(shape) - self.axis
        if len(offsets) > 1 and len(offsets) != cropped:
            raise LayerSetupError(
                f"{where(self)}: crop_param.offset {offsets} has {len(offsets)} values, but "
                f"axis {self.axis} of the bottom of shape {shape} leaves {cropped} axes to "
                f"crop; give no offset, one for all axes, or exactly {cropped}")
        self.offsets = offsets * cropped if len(offsets) == 1 else offsets or [0] * cropped

    def reshape(self, bottom, top):
        big, ref = bottom[0].shape, bottom[1].shape
        if len(big) != len(ref):
            raise LayerSetupError(
                f"{where(self)}: the bottoms must have the same number of axes; got shapes "
                f"{big} and {ref}")
        window = [slice(None)] * self.axis
        for i, off in enumerate(self.offsets, self.axis):
            if off + ref[i] > big[i]:
                raise LayerSetupError(
                    f"{where(self)}: the crop of axis {i} is out of bounds: crop_param.offset "
                    f"{off} + size {ref[i]} (bottom 1 shape {ref}) exceeds {big[i]} (bottom 0 "
                    f"shape {big})")
            window.append(slice(off, off + ref[i]))
        self.window = tuple(window)
        top[0].reshape(big[:self.axis] + ref[self.axis:])

    def forward(self, bottom, top):
        top[0].tensor = bottom[0].tensor[self.window].clone(memory_format=torch.contiguous_format)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = torch.zeros_like(bottom[0].tensor)
            dx[self.window] = top[0].diff_tensor
            bottom[0].diff_tensor = dx
