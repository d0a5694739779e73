"""Im2col: unroll every (dilated) kernel window of the bottom into a column, as Convolution
does internally.

bottom: (N..., C, *spatial) with the channel axis at ``convolution_param.axis``; top:
(N..., C * prod(kernel), *out) with out = (in + 2 pad - (dilation (k - 1) + 1)) // stride + 1.
Channel-major column order: top channel (c * k_1 + i_1) * k_2 + i_2 ... holds bottom channel c
at kernel offset (i_1, i_2, ...); zero padding. Backward is col2im (overlaps sum). Two spatial
axes use torch's unfold/fold (same order); other counts strided views and autograd."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from caffe._layers.vision.conv_geometry import ConvGeometry, conv_geometry, conv_output_size
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


def im2col(x: torch.Tensor, geo: ConvGeometry) -> torch.Tensor:
    """(B, C, *spatial) -> (B, C * prod(kernel), *out), as strided views plus one copy."""
    n = geo.num_spatial
    win = F.pad(x, [q for p in reversed(geo.pad) for q in (p, p)])
    for i, (k, s, d) in enumerate(zip(geo.kernel, geo.stride, geo.dilation)):
        win = win.unfold(2 + i, d * (k - 1) + 1, s)
    win = win[(...,) + tuple(slice(None, None, d) for d in geo.dilation)]
    out = win.shape[2:2 + n]
    order = (0, 1) + tuple(range(2 + n, 2 + 2 * n)) + tuple(range(2, 2 + n))
    return win.permute(order).reshape((x.shape[0], -1) + tuple(out))


@register_layer("Im2col")
class Im2col(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        self.geo = conv_geometry(self.layer_param.convolution_param, bottom[0].shape,
                                 f"Layer '{self.name}' (Im2col)")

    def reshape(self, bottom, top):
        g = self.geo
        ax = g.channel_axis
        shape = bottom[0].shape
        if len(shape) != ax + 1 + g.num_spatial:
            raise LayerSetupError(f"Layer '{self.name}' (Im2col): bottom shape {shape} must "
                                  f"keep {g.num_spatial} spatial axes after the channel axis "
                                  f"{ax}")
        out = tuple(conv_output_size(i, k, s, p, d) for i, k, s, p, d in
                    zip(shape[ax + 1:], g.kernel, g.stride, g.pad, g.dilation))
        if any(o <= 0 for o in out):
            raise LayerSetupError(
                f"Layer '{self.name}' (Im2col): kernel {g.kernel} (dilation {g.dilation}) is "
                f"larger than the padded input "
                f"{tuple(i + 2 * p for i, p in zip(shape[ax + 1:], g.pad))}")
        self.batch_shape = (math.prod(shape[:ax]),) + shape[ax:]
        top[0].reshape(shape[:ax] + (shape[ax] * math.prod(g.kernel),) + out)

    def _unfold_args(self) -> dict:
        g = self.geo
        return dict(kernel_size=g.kernel, dilation=g.dilation, padding=g.pad, stride=g.stride)

    def forward(self, bottom, top):
        x = bottom[0].tensor.reshape(self.batch_shape)
        if self.geo.num_spatial == 2:  # torch's im2col: the same channel-major column order
            cols = F.unfold(x, **self._unfold_args())
        else:
            cols = im2col(x, self.geo)
        top[0].tensor = cols.view(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dcol = top[0].diff_tensor
        if self.geo.num_spatial == 2:  # torch's col2im
            dx = F.fold(dcol.reshape(self.batch_shape[0], dcol.shape[-3], -1),
                        self.batch_shape[2:], **self._unfold_args())
            bottom[0].diff_tensor = dx.view(bottom[0].shape)
            return
        # col2im is the adjoint of the (linear) im2col: let autograd scatter the columns back
        with torch.enable_grad():
            x = torch.zeros(self.batch_shape, dtype=dcol.dtype, device=dcol.device,
                            requires_grad=True)
            cols = im2col(x, self.geo)
            (dx,) = torch.autograd.grad(cols, x, dcol.reshape(cols.shape))
        bottom[0].diff_tensor = dx.view(bottom[0].shape)
