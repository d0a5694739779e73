"""Tile: repeat the block of axes ``axis``.. ``tiles`` times along ``axis``. bottom
(d0, ..., d_axis, ...) -> top (d0, ..., tiles * d_axis, ...); backward sums the copies."""

from __future__ import annotations

import math

from caffe._layers.utility._shared import canonical_axis, where
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Tile")
class Tile(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.layer_param.tile_param
        if not p.HasField("tiles") or p.tiles <= 0:
            raise LayerSetupError(
                f"{where(self)}: tile_param.tiles must be set to a positive count, got "
                f"{p.tiles if p.HasField('tiles') else 'nothing'}")
        self.tiles = int(p.tiles)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = canonical_axis(self, self.layer_param.tile_param.axis, shape, "tile_param.axis")
        self.outer = math.prod(shape[:axis])
        self.inner = math.prod(shape[axis:])
        top[0].reshape(shape[:axis] + (shape[axis] * self.tiles,) + shape[axis + 1:])

    def forward(self, bottom, top):
        x = bottom[0].tensor.reshape(self.outer, 1, self.inner)
        top[0].tensor = x.repeat(1, self.tiles, 1).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy = top[0].diff_tensor.reshape(self.outer, self.tiles, self.inner)
            bottom[0].diff_tensor = dy.sum(1).reshape(bottom[0].shape)
