"""Shared parameter handling for Convolution, Deconvolution and Im2col: the channel axis, the
number of spatial axes, and per-axis kernel / stride / pad / dilation from either the repeated
fields or the 2-D ``*_h`` / ``*_w`` forms, as Caffe's BaseConvolutionLayer reads them."""

from __future__ import annotations

from dataclasses import dataclass

from caffe.errors import LayerSetupError
from caffe.proto import caffe_pb2


@dataclass(frozen=True)
class ConvGeometry:
    channel_axis: int
    num_spatial: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]


def _per_axis(name: str, values, hw: tuple[bool, int, int], n: int, default: int,
              where: str) -> tuple[int, ...]:
    has_hw, h, w = hw
    if has_hw:
        if n != 2:
            raise LayerSetupError(f"{where}: {name}_h/{name}_w can only be used for 2-D "
                                  f"convolution, this one has {n} spatial axes")
        if len(values):
            raise LayerSetupError(f"{where}: give either {name}_size/{name} or {name}_h and "
                                  f"{name}_w, not both")
        return (int(h), int(w))
    values = list(values)
    if not values:
        return (default,) * n
    if len(values) == 1:
        return (int(values[0]),) * n
    if len(values) != n:
        raise LayerSetupError(f"{where}: {name} must be given once or {n} times (one per "
                              f"spatial axis), got {len(values)} values {values}")
    return tuple(int(v) for v in values)


def conv_geometry(p: caffe_pb2.ConvolutionParameter, shape: tuple[int, ...],
                  where: str) -> ConvGeometry:
    """Read a ConvolutionParameter for a bottom of ``shape``. ``where`` names the layer."""
    n_axes = len(shape)
    axis = p.axis + n_axes if p.axis < 0 else p.axis
    if not 0 <= axis < n_axes:
        raise LayerSetupError(f"{where}: axis {p.axis} is out of range for bottom {shape}")
    n = n_axes - axis - 1
    if n < 1:
        raise LayerSetupError(f"{where}: bottom {shape} has no spatial axes after the channel "
                              f"axis {axis}")
    has_kh = p.HasField("kernel_h") or p.HasField("kernel_w")
    if has_kh and not (p.HasField("kernel_h") and p.HasField("kernel_w")):
        raise LayerSetupError(f"{where}: kernel_h and kernel_w must be given together")
    kernel = _per_axis("kernel", p.kernel_size, (has_kh, p.kernel_h, p.kernel_w), n, 0, where)
    if any(k <= 0 for k in kernel):
        raise LayerSetupError(f"{where}: kernel dimensions must be positive, got {kernel} "
                              "(set kernel_size, or kernel_h and kernel_w)")
    stride = _per_axis("stride", p.stride,
                       (p.HasField("stride_h") or p.HasField("stride_w"), p.stride_h,
                        p.stride_w), n, 1, where)
    if any(s <= 0 for s in stride):
        raise LayerSetupError(f"{where}: stride must be positive, got {stride}")
    pad = _per_axis("pad", p.pad, (p.HasField("pad_h") or p.HasField("pad_w"), p.pad_h,
                                   p.pad_w), n, 0, where)
    dilation = _per_axis("dilation", p.dilation, (False, 0, 0), n, 1, where)
    if any(d <= 0 for d in dilation):
        raise LayerSetupError(f"{where}: dilation must be positive, got {dilation}")
    return ConvGeometry(axis, n, kernel, stride, pad, dilation)


def conv_output_size(size: int, k: int, s: int, p: int, d: int) -> int:
    """Convolution output length: (size + 2p - (d(k-1)+1)) // s + 1."""
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1
