"""Pooling over the spatial axes of (N, C, H, W) blobs: MAX, AVE or STOCHASTIC.

Output size rounds up (CEIL, Caffe's default) or down (``round_mode: FLOOR``):
out = ceil((H + 2 pad - k) / s) + 1, minus one when padding would make the last window start
in the padding. MAX windows are clipped to the input; the optional second top is the argmax
as a flat index h * W + w within the input plane. AVE divides by the window clipped to the
padded input (pad included, beyond-padding excluded). STOCHASTIC samples in TRAIN by
activation and returns the activation-weighted mean in TEST."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from caffe._common import generator_for, tracing
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.proto import caffe_pb2
from caffe.registry import register_layer

PP = caffe_pb2.PoolingParameter
_FLT_MAX = 3.4028234663852886e38


def _pooled_size(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    span = size + 2 * p - k
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if p and (out - 1) * s >= size + p:
        out -= 1
    return out


@register_layer("Pooling")
class Pooling(Layer):
    replaces_tops = True
    replaces_bottom_diffs = True
    exact_num_bottom_blobs = 1
    min_top_blobs = 1
    max_top_blobs = 2

    def setup(self, bottom, top):
        p = self.layer_param.pooling_param
        where = f"Layer '{self.name}' (Pooling)"
        self.global_pooling = bool(p.global_pooling)
        has_k = p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w")
        if self.global_pooling and has_k:
            raise LayerSetupError(f"{where}: with global_pooling the kernel size cannot be set")
        if not self.global_pooling and not has_k:
            raise LayerSetupError(f"{where}: set kernel_size (or kernel_h and kernel_w), or "
                                  "global_pooling: true")
        if p.HasField("kernel_size") and (p.HasField("kernel_h") or p.HasField("kernel_w")):
            raise LayerSetupError(f"{where}: give kernel_size or kernel_h/kernel_w, not both")
        if p.HasField("kernel_h") != p.HasField("kernel_w") and not p.HasField("kernel_size"):
            raise LayerSetupError(f"{where}: kernel_h and kernel_w must be given together")
        if p.HasField("kernel_size"):
            self.kernel = (p.kernel_size, p.kernel_size)
        else:
            self.kernel = (p.kernel_h, p.kernel_w)
        self.pad = (p.pad_h, p.pad_w) if (p.HasField("pad_h") or p.HasField("pad_w")) \
            else (p.pad, p.pad)
        self.stride = (p.stride_h, p.stride_w) if (p.HasField("stride_h")
                                                   or p.HasField("stride_w")) \
            else (p.stride, p.stride)
        self.method = p.pool
        if self.global_pooling:
            if self.pad != (0, 0) or self.stride != (1, 1):
                raise LayerSetupError(f"{where}: with global_pooling, pad must be 0 and "
                                      "stride 1")
        if len(top) > 1 and self.method != PP.MAX:
            raise LayerSetupError(f"{where}: only MAX pooling has a second (mask) top")
        self.ceil_mode = p.round_mode == PP.CEIL

    def reshape(self, bottom, top):
        where = f"Layer '{self.name}' (Pooling)"
        shape = bottom[0].shape
        if len(shape) != 4:
            raise LayerSetupError(f"{where}: input must have 4 axes (N, C, H, W), got {shape}")
        n, c, h, w = shape
        if self.global_pooling:
            self.kernel = (h, w)
        kh, kw = self.kernel
        if kh <= 0 or kw <= 0:
            raise LayerSetupError(f"{where}: kernel must be positive, got {self.kernel}")
        if min(self.stride) <= 0:
            raise LayerSetupError(f"{where}: stride must be positive, got {self.stride}")
        for k, p in zip(self.kernel, self.pad):
            if p >= k:
                raise LayerSetupError(f"{where}: pad {self.pad} must be smaller than the kernel "
                                      f"{self.kernel}")
        if self.pad != (0, 0) and self.method not in (PP.MAX, PP.AVE):
            raise LayerSetupError(f"{where}: padding is only implemented for MAX and AVE")
        self.out = tuple(_pooled_size(sz, k, s, p, self.ceil_mode)
                         for sz, k, s, p in zip((h, w), self.kernel, self.stride, self.pad))
        if any(o <= 0 for o in self.out):
            raise LayerSetupError(f"{where}: kernel {self.kernel} is larger than the padded "
                                  f"input {(h + 2 * self.pad[0], w + 2 * self.pad[1])}")
        torch_out = tuple(
            _torch_size(sz, k, s, p, self.ceil_mode)
            for sz, k, s, p in zip((h, w), self.kernel, self.stride, self.pad))
        self.native = (torch_out == self.out
                       and all(p <= k // 2 for p, k in zip(self.pad, self.kernel)))
        for t in top:
            t.reshape((n, c) + self.out)

    # ------------------------------------------------------------------ general path
    def _extra(self, h: int, w: int) -> tuple[int, int]:
        """Padding past the bottom/right edge so that every window fits."""
        return tuple((o - 1) * s + k - (sz + p)
                     for o, s, k, sz, p in zip(self.out, self.stride, self.kernel, (h, w),
                                               self.pad))

    def _padded(self, x: torch.Tensor, value: float) -> torch.Tensor:
        """Pad (or crop, where negative) so the input spans exactly the pooling windows."""
        h, w = x.shape[-2:]
        eh, ew = self._extra(h, w)
        return F.pad(x, (self.pad[1], ew, self.pad[0], eh), value=value)

    def _ave_divisor(self, h: int, w: int, device) -> torch.Tensor:
        sizes = []
        for o, s, k, sz, p in zip(self.out, self.stride, self.kernel, (h, w), self.pad):
            start = torch.arange(o, device=device) * s - p
            end = torch.clamp(start + k, max=sz + p)
            sizes.append((end - start).to(torch.float32))
        return sizes[0][:, None] * sizes[1][None, :]

    # ------------------------------------------------------------------ forward/backward
    def forward(self, bottom, top):
        x = bottom[0].tensor
        if self.method == PP.MAX:
            if self.native and not self._need_backward and len(top) == 1:
                top[0].tensor = F.max_pool2d(x, self.kernel, self.stride, self.pad,
                                             ceil_mode=self.ceil_mode)
                self.argmax = None  # no backward will come: keep no indices
                return
            if self.native:
                y, idx = F.max_pool2d(x, self.kernel, self.stride, self.pad,
                                      ceil_mode=self.ceil_mode, return_indices=True)
            else:
                y, idx = self._max_general(x)
            self.argmax = idx
            top[0].tensor = y
            if len(top) > 1:
                top[1].tensor = idx.to(y.dtype)
        elif self.method == PP.AVE:
            if self.native:
                y = F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil_mode,
                                 count_include_pad=True)
            else:
                h, w = x.shape[-2:]
                if tracing():  # torch.onnx drops divisor_override: the sum as mean * area
                    summed = F.avg_pool2d(self._padded(x, 0.0), self.kernel, self.stride) * (
                        self.kernel[0] * self.kernel[1])
                else:
                    summed = F.avg_pool2d(self._padded(x, 0.0), self.kernel, self.stride,
                                          divisor_override=1)
                y = summed / self._ave_divisor(h, w, x.device).to(x.dtype)
            top[0].tensor = y
        elif self.method == PP.STOCHASTIC:
            top[0].tensor = self._stochastic(x)
        else:
            raise LayerSetupError(f"Layer '{self.name}' (Pooling): unknown pool method "
                                  f"{self.method}")

    def _max_general(self, x):
        h, w = x.shape[-2:]
        xp = self._padded(x, float("-inf"))
        y, idx = F.max_pool2d(xp, self.kernel, self.stride, return_indices=True)
        wp = xp.shape[-1]
        r, c = idx // wp - self.pad[0], idx % wp - self.pad[1]
        # a window wholly past the input (ceil rounding without padding) is empty: Caffe leaves
        # -FLT_MAX and mask -1 there, and its backward passes nothing
        empty = (r < 0) | (r >= h) | (c < 0) | (c >= w)
        return y.masked_fill(empty, -_FLT_MAX), (r * w + c).masked_fill(empty, -1)

    def _windows(self, x):
        """(N, C, OH, OW, kh*kw) windows over the zero-padded input (no padding: STOCHASTIC)."""
        xp = self._padded(x, 0.0)
        u = xp.unfold(2, self.kernel[0], self.stride[0]).unfold(3, self.kernel[1],
                                                                  self.stride[1])
        return u.reshape(u.shape[:4] + (-1,))

    def _stochastic(self, x):
        win = self._windows(x)
        if self.phase == caffe_pb2.TRAIN:
            # Caffe's rule: pick the first element whose running sum reaches u * (window sum),
            # u ~ U[0, 1); the last running sum is the window sum, so the pick stays in range
            running = win.cumsum(-1)
            u = torch.rand(running.shape[:-1] + (1,), generator=generator_for(x.device),
                           device=x.device, dtype=x.dtype)
            choice = (running < u * running[..., -1:]).sum(-1, keepdim=True)
            self.choice = choice.clamp_max_(win.shape[-1] - 1)
            return win.gather(-1, self.choice).squeeze(-1)
        return self._stochastic_test(win)[0]

    @staticmethod
    def _stochastic_test(win):
        """TEST output, the activation-weighted mean sum(x^2) / sum(x), and sum(x)."""
        total = win.sum(-1).clamp_min(torch.finfo(win.dtype).tiny)
        return (win * win).sum(-1) / total, total

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].tensor
        dy = top[0].diff_tensor
        n, c, h, w = x.shape
        if self.method == PP.MAX:
            if self.native:
                dx = torch.ops.aten.max_pool2d_with_indices_backward(
                    dy, x, list(self.kernel), list(self.stride), list(self.pad), [1, 1],
                    self.ceil_mode, self.argmax)
            else:
                # empty windows (mask -1) scatter into a spare last slot
                idx = self.argmax.reshape(n, c, -1)
                idx = torch.where(idx < 0, h * w, idx)
                dx = torch.zeros(n, c, h * w + 1, dtype=dy.dtype, device=dy.device)
                dx.scatter_add_(2, idx, dy.reshape(n, c, -1))
                dx = dx[..., :h * w].reshape(n, c, h, w)
        elif self.method == PP.AVE:
            if self.native:
                dx = torch.ops.aten.avg_pool2d_backward(
                    dy, x, list(self.kernel), list(self.stride), list(self.pad), self.ceil_mode,
                    True, None)
            else:
                dx = self._window_backward(
                    (dy / self._ave_divisor(h, w, dy.device).to(dy.dtype)).unsqueeze(-1)
                    .expand(dy.shape + (self.kernel[0] * self.kernel[1],)), x)
        elif self.phase == caffe_pb2.TRAIN:
            onehot = torch.zeros(dy.shape + (self.kernel[0] * self.kernel[1],), dtype=dy.dtype,
                                 device=dy.device)
            onehot.scatter_(-1, self.choice, dy.unsqueeze(-1))
            dx = self._window_backward(onehot, x)
        else:
            # d(sum x^2 / sum x)/dx_i = (2 x_i - y) / sum x (Caffe has no TEST backward)
            win = self._windows(x)
            y, total = self._stochastic_test(win)
            dx = self._window_backward((dy / total).unsqueeze(-1)
                                       * (2 * win - y.unsqueeze(-1)), x)
        bottom[0].diff_tensor = dx

    def _window_backward(self, per_window, x):
        """Scatter (N, C, OH, OW, kh*kw) window gradients back onto the input."""
        n, c, h, w = x.shape
        eh, ew = self._extra(h, w)
        hp, wp = h + self.pad[0] + eh, w + self.pad[1] + ew
        cols = per_window.permute(0, 1, 4, 2, 3).reshape(n, c * self.kernel[0] * self.kernel[1],
                                                         -1)
        full = F.fold(cols, (hp, wp), self.kernel, stride=self.stride).view(n, c, hp, wp)
        return F.pad(full, (-self.pad[1], -ew, -self.pad[0], -eh))


def _torch_size(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    out = (size + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out
