"""SPP (spatial pyramid pooling): pool the bottom at ``pyramid_height`` levels and
concatenate the flattened results.

Level l has 2^l x 2^l bins: kernel = ceil(size / 2^l), stride = kernel,
pad = (kernel * 2^l - size + 1) // 2 per spatial axis, pooled with ``pool`` (MAX, AVE or
STOCHASTIC) by a Pooling layer, so its rounding and padding rules apply.

bottom: (N, C, H, W); top: (N, C * sum over levels of bins) or, with one level, (N, C, 1, 1)
(the pooling output itself)."""

from __future__ import annotations

import math

import torch

from caffe._layers.vision.pooling import Pooling
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.proto import caffe_pb2
from caffe.registry import register_layer


def level_pooling_param(level: int, height: int, width: int,
                        pool: int) -> caffe_pb2.PoolingParameter:
    """The pooling that splits a height x width plane into 2^level bins per axis."""
    bins = 2 ** level
    kh, kw = math.ceil(height / bins), math.ceil(width / bins)
    return caffe_pb2.PoolingParameter(
        pool=pool, kernel_h=kh, kernel_w=kw, stride_h=kh, stride_w=kw,
        pad_h=(kh * bins - height + 1) // 2, pad_w=(kw * bins - width + 1) // 2)


@register_layer("SPP")
class SPP(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.layer_param.spp_param
        self.pyramid_height = int(p.pyramid_height)
        if self.pyramid_height < 1:
            raise LayerSetupError(f"Layer '{self.name}' (SPP): pyramid_height must be at "
                                  f"least 1, got {p.pyramid_height}")
        self.pool = p.pool
        self.plane: tuple[int, ...] = ()
        self.input = Blob()

    def _build_levels(self, bottom) -> None:
        """One Pooling layer (and its top blob) per level, for the current plane size."""
        h, w = self.plane
        self.levels = []
        self.input.reshape(bottom[0].shape)
        for level in range(self.pyramid_height):
            lp = caffe_pb2.LayerParameter(name=f"{self.name}/level{level}", type="Pooling")
            lp.pooling_param.CopyFrom(level_pooling_param(level, h, w, self.pool))
            pool, out = Pooling(lp, self.phase), Blob()
            pool.SetUp([self.input], [out])
            self.levels.append((pool, out))

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise LayerSetupError(f"Layer '{self.name}' (SPP): input must have 4 axes (num, "
                                  f"channels, height, width), got shape {shape}")
        if shape[2] <= 0 or shape[3] <= 0:
            raise LayerSetupError(f"Layer '{self.name}' (SPP): input height and width must be "
                                  f"positive, got shape {shape}")
        self.input.reshape(shape)
        if shape[2:] != self.plane:
            self.plane = shape[2:]
            self._build_levels(bottom)
        else:
            for pool, out in self.levels:
                pool.reshape([self.input], [out])
        if self.pyramid_height == 1:
            top[0].reshape(self.levels[0][1].shape)
        else:
            top[0].reshape(shape[0], sum(out.count // shape[0] for _, out in self.levels))

    def forward(self, bottom, top):
        self.input.tensor = bottom[0].tensor
        flat = []
        for pool, out in self.levels:
            pool.forward([self.input], [out])
            flat.append(out.tensor.reshape(out.shape[0], -1))
        top[0].tensor = torch.cat(flat, dim=1).view(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff_tensor.reshape(top[0].shape[0], -1)
        dx = None
        start = 0
        for pool, out in self.levels:
            width = out.count // out.shape[0]
            out.diff_tensor = dy[:, start:start + width].reshape(out.shape)
            start += width
            pool.backward([out], [True], [self.input])
            dx = self.input.diff_tensor if dx is None else dx + self.input.diff_tensor
        bottom[0].diff_tensor = dx
