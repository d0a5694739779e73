"""Deconvolution (transposed convolution): the adjoint of Convolution with the same kernel,
stride, pad, dilation and group; each input pixel scatters a weighted kernel onto the output.

bottom: (N, C, *spatial) with the channel axis at ``axis``; top: (N, num_output, *out) with
out = stride (in - 1) + dilation (k - 1) + 1 - 2 pad. W: (C, num_output / group, *kernel);
b: (num_output,)."""

from __future__ import annotations

import torch.nn.functional as F

from caffe._layers.vision.convolution import Convolution
from caffe.errors import LayerSetupError
from caffe.registry import register_layer

_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@register_layer("Deconvolution")
class Deconvolution(Convolution):
    transposed = True

    def output_shape(self, in_spatial: tuple[int, ...]) -> tuple[int, ...]:
        g = self.geo
        out = tuple(s * (i - 1) + d * (k - 1) + 1 - 2 * p for i, k, s, p, d in
                    zip(in_spatial, g.kernel, g.stride, g.pad, g.dilation))
        if any(o <= 0 for o in out):
            raise LayerSetupError(
                f"Layer '{self.name}' (Deconvolution): pad {g.pad} is too large for input "
                f"{tuple(in_spatial)} with kernel {g.kernel}, stride {g.stride} and dilation "
                f"{g.dilation}; the output would be {out}")
        return out

    def _run(self, x, w, b):
        g = self.geo
        return _DECONV[g.num_spatial](x, w, b, g.stride, g.pad, 0, self.group, g.dilation)
