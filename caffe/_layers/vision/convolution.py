"""Convolution: top[n, o] = bias[o] + sum_c W[o, c] * bottom[n, g(o)*C/G + c] (cross-correlation
with kernel, stride, pad, dilation, group).

bottom: (N, C, *spatial) with the channel axis at ``axis`` (default 1); top: (N, num_output,
*out) with out = (in + 2 pad - (dilation (k - 1) + 1)) // stride + 1. W: (num_output, C/group,
*kernel); b: (num_output,). Several bottom/top pairs share the weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from caffe._common import low_precision as lp
from caffe._layers.vision.conv_geometry import conv_geometry, conv_output_size
from caffe.errors import LayerSetupError
from caffe.fillers import fill
from caffe.layer import Layer
from caffe.registry import register_layer

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@register_layer("Convolution")
class Convolution(Layer):
    replaces_tops = True
    replaces_bottom_diffs = True
    min_bottom_blobs = 1
    min_top_blobs = 1
    equal_num_bottom_top_blobs = True

    #: Deconvolution flips this
    transposed = False

    def setup(self, bottom, top):
        p = self.layer_param.convolution_param
        where = f"Layer '{self.name}' ({self.type})"
        self.geo = geo = conv_geometry(p, bottom[0].shape, where)
        if geo.num_spatial > 3:
            raise LayerSetupError(f"{where}: {geo.num_spatial} spatial axes; at most 3 are "
                                  "supported")
        self.channels = bottom[0].shape[geo.channel_axis]
        self.num_output = int(p.num_output)
        self.group = int(p.group)
        if self.num_output <= 0:
            raise LayerSetupError(f"{where}: num_output must be positive, got {p.num_output}")
        if self.group <= 0 or self.channels % self.group or self.num_output % self.group:
            raise LayerSetupError(
                f"{where}: group {p.group} must divide both the input channels "
                f"({self.channels}) and num_output ({self.num_output})")
        self.bias_term = bool(p.bias_term)
        if self.blobs:
            return
        if self.transposed:
            wshape = (self.channels, self.num_output // self.group) + geo.kernel
        else:
            wshape = (self.num_output, self.channels // self.group) + geo.kernel
        self.blobs.add_blob(*wshape)
        fill(self.blobs[0], p.weight_filler)
        if self.bias_term:
            self.blobs.add_blob(self.num_output)
            fill(self.blobs[1], p.bias_filler)

    def output_shape(self, in_spatial: tuple[int, ...]) -> tuple[int, ...]:
        g = self.geo
        return tuple(conv_output_size(i, k, s, p, d) for i, k, s, p, d in
                     zip(in_spatial, g.kernel, g.stride, g.pad, g.dilation))

    def reshape(self, bottom, top):
        g = self.geo
        ax = g.channel_axis
        shape0 = bottom[0].shape
        where = f"Layer '{self.name}' ({self.type})"
        if len(shape0) != ax + 1 + g.num_spatial or shape0[ax] != self.channels:
            raise LayerSetupError(
                f"{where}: bottom shape {shape0} does not match the layer: it expects "
                f"{self.channels} channels at axis {ax} and {g.num_spatial} spatial axes")
        for b in bottom[1:]:
            if b.shape != shape0:
                raise LayerSetupError(f"{where}: all bottoms must have the same shape; got "
                                      f"{[x.shape for x in bottom]}")
        out = self.output_shape(shape0[ax + 1:])
        if any(o <= 0 for o in out):
            raise LayerSetupError(
                f"{where}: kernel {g.kernel} (dilation {g.dilation}) is larger than the padded "
                f"input {tuple(i + 2 * p for i, p in zip(shape0[ax + 1:], g.pad))}; output "
                f"would be {out}")
        self.batch = math.prod(shape0[:ax])
        self.out_spatial = out
        #: channel axis 1: the blobs are already (N, C, spatial...), no views needed (each
        #: costs a microsecond or two of Python, which launch-bound GPU passes pay per layer)
        self._plain = ax == 1
        for t in top:
            t.reshape(shape0[:ax] + (self.num_output,) + out)

    def _nchw(self, blob):
        g = self.geo
        return blob.tensor.reshape((self.batch, blob.shape[g.channel_axis])
                                   + blob.shape[g.channel_axis + 1:])

    def _run(self, x, w, b):
        g = self.geo
        return _CONV[g.num_spatial](x, w, b, g.stride, g.pad, g.dilation, self.group)

    def forward(self, bottom, top):
        w = lp(self.blobs[0].tensor)
        b = lp(self.blobs[1].tensor) if self.bias_term else None
        for bt, t in zip(bottom, top):
            x = bt.tensor if self._plain else self._nchw(bt)
            y = self._run(lp(x), w, b)
            if y.dtype != x.dtype:
                y = y.to(x.dtype)
            t.tensor = y if self._plain else y.view(t.shape)

    def backward(self, top, propagate_down, bottom):
        g = self.geo
        w = self.blobs[0].tensor
        want_w = self._param_propagate_down[0]
        want_b = self.bias_term and self._param_propagate_down[1]
        for i, (b, t) in enumerate(zip(bottom, top)):
            if not (propagate_down[i] or want_w or want_b):
                continue
            dy = lp(t.diff_tensor if self._plain else self._nchw_diff(t))
            x = b.tensor if self._plain else self._nchw(b)
            dx, dw, db = torch.ops.aten.convolution_backward(
                dy, lp(x), lp(w), [self.num_output] if want_b else None, list(g.stride),
                list(g.pad), list(g.dilation), self.transposed, [0] * g.num_spatial, self.group,
                [bool(propagate_down[i]), bool(want_w), bool(want_b)])
            if want_w:
                self.blobs[0].diff_tensor.add_(dw)
            if want_b:
                self.blobs[1].diff_tensor.add_(db)
            if propagate_down[i]:
                if dx.dtype != x.dtype:
                    dx = dx.to(x.dtype)
                b.diff_tensor = dx if self._plain else dx.view(b.shape)

    def _nchw_diff(self, blob):
        g = self.geo
        return blob.diff_tensor.reshape((self.batch, blob.shape[g.channel_axis])
                                        + blob.shape[g.channel_axis + 1:])
