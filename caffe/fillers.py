"""Weight fillers, as Caffe's FillerParameter types: constant, uniform, gaussian (optionally
sparse), positive_unitball, xavier, msra and bilinear.

Random values come from the generator seeded by ``caffe.set_random_seed`` (drawn on the CPU and
then moved, so a seed gives the same weights on every device). Fans, as in Caffe:
fan_in = count / shape[0], fan_out = count / shape[1] (count for a 1-D blob).
"""

from __future__ import annotations

import math

import torch

from caffe._common import STATE
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.proto import caffe_pb2


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    count = math.prod(shape)
    fan_in = count // shape[0] if shape and shape[0] else count
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _norm_n(fp: caffe_pb2.FillerParameter, shape: tuple[int, ...]) -> float:
    fan_in, fan_out = _fans(shape)
    if fp.variance_norm == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if fp.variance_norm == caffe_pb2.FillerParameter.FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def check(fp: caffe_pb2.FillerParameter, shape: tuple[int, ...]) -> None:
    """Caffe's argument checks, as errors instead of aborts."""
    kind = fp.type
    if kind not in _DRAWS:
        raise LayerSetupError(f"Unknown filler type '{kind}'; use one of {', '.join(_DRAWS)}")
    if kind == "gaussian":
        if fp.sparse < -1:
            raise LayerSetupError(f"gaussian filler: sparse must be -1 (dense) or >= 0, got "
                                  f"{fp.sparse}")
        if not fp.std >= 0:  # NaN too
            raise LayerSetupError(f"gaussian filler: std must be non-negative, got {fp.std}")
        if fp.sparse >= 0 and (not shape or fp.sparse > shape[0]):
            raise LayerSetupError(
                f"gaussian filler: sparse {fp.sparse} needs a blob whose first dimension (the "
                f"number of outputs) is at least {fp.sparse}; got shape {shape}")
    elif fp.sparse != -1:
        raise LayerSetupError(f"{kind} filler: sparsity is only supported by the gaussian "
                              f"filler (got sparse: {fp.sparse})")
    if kind == "uniform" and not (math.isfinite(fp.min) and math.isfinite(fp.max)):
        raise LayerSetupError(f"uniform filler: min and max must be finite, got {fp.min} and "
                              f"{fp.max}")
    if kind == "uniform" and fp.min > fp.max:
        raise LayerSetupError(f"uniform filler: min {fp.min} is larger than max {fp.max}")
    if kind == "bilinear" and (len(shape) != 4 or shape[2] != shape[3]):
        raise LayerSetupError(
            f"bilinear filler needs a 4-D blob with square kernels, got shape {shape}")


def _bilinear(shape: tuple[int, ...]) -> torch.Tensor:
    """Caffe's bilinear upsampling kernel (1 - |x / f - c|) (1 - |y / f - c|) with
    f = ceil(K / 2), c = (K - 1) / (2 f): x / f - c in float32, the rest in double, as
    Caffe's float code with the C ``fabs`` computes it."""
    size = shape[3]
    f = math.ceil(size / 2.0)
    c = torch.tensor((size - 1) / (2.0 * f), dtype=torch.float32)
    offset = torch.arange(size, dtype=torch.float32) / f - c
    tri = 1 - offset.double().abs()
    return (tri[:, None] * tri[None, :]).float().expand(shape)


def _gaussian(out: torch.Tensor, fp: caffe_pb2.FillerParameter,
              g: torch.Generator | None) -> torch.Tensor:
    out.normal_(fp.mean, fp.std, generator=g)
    if fp.sparse >= 0:
        # each weight is kept with probability sparse / num_outputs
        keep = torch.full_like(out, fp.sparse / out.shape[0])
        out.mul_(torch.bernoulli(keep, generator=g))
    return out


def _positive_unitball(out: torch.Tensor, fp: caffe_pb2.FillerParameter,
                       g: torch.Generator | None) -> torch.Tensor:
    out.uniform_(0.0, 1.0, generator=g)
    flat = out.view(out.shape[0] if out.dim() else 1, -1)
    flat.div_(flat.sum(dim=1, keepdim=True))
    return out


def _xavier(out: torch.Tensor, fp: caffe_pb2.FillerParameter,
            g: torch.Generator | None) -> torch.Tensor:
    scale = math.sqrt(3.0 / _norm_n(fp, tuple(out.shape)))
    return out.uniform_(-scale, scale, generator=g)


def _msra(out: torch.Tensor, fp: caffe_pb2.FillerParameter,
          g: torch.Generator | None) -> torch.Tensor:
    return out.normal_(0.0, math.sqrt(2.0 / _norm_n(fp, tuple(out.shape))), generator=g)


# filler type -> fn(out, fp, generator) filling out in place; one lookup per refill
_DRAWS = {
    "constant": lambda out, fp, g: out.fill_(fp.value),
    "uniform": lambda out, fp, g: out.uniform_(fp.min, fp.max, generator=g),
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": lambda out, fp, g: out.copy_(_bilinear(tuple(out.shape))),
}


def _draw(out: torch.Tensor, fp: caffe_pb2.FillerParameter,
          g: torch.Generator | None) -> torch.Tensor:
    """Fill ``out`` (already checked against ``fp``) in place with ``g``."""
    return _DRAWS[fp.type](out, fp, g) if out.numel() else out


def make_filled(fp: caffe_pb2.FillerParameter, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 CPU tensor of ``shape`` filled as ``fp`` says."""
    check(fp, shape)
    return _draw(torch.empty(shape, dtype=torch.float32), fp, STATE.generator)


def _draws_like_make_filled(t: torch.Tensor) -> bool:
    """Whether drawing straight into ``t`` gives make_filled's numbers: a contiguous float32
    CPU tensor (the same generator calls fill the same memory layout)."""
    return t.is_cpu and t.dtype == torch.float32 and t.is_contiguous()


def fill_(t: torch.Tensor, fp: caffe_pb2.FillerParameter) -> torch.Tensor:
    """Fill ``t`` in place as ``fp`` says, drawing on ``t``'s own device: with the seeded CPU
    generator on the CPU (a contiguous float32 tensor gets make_filled's numbers), with the
    device's generator elsewhere (seeded by ``caffe.set_random_seed`` too, but its numbers
    differ from the CPU's). For data refilled often (DummyData); weights use ``fill``."""
    check(fp, tuple(t.shape))
    return refill_(t, fp)


def refill_(t: torch.Tensor, fp: caffe_pb2.FillerParameter) -> torch.Tensor:
    """``fill_`` without its checks of ``fp``, for a filler already checked against ``t``'s
    shape (DummyData checks at setup, then refills at every forward)."""
    if not t.is_cpu:
        return _draw(t, fp, None)  # the device's default generator (see generator_for)
    if _draws_like_make_filled(t):
        return _draw(t, fp, STATE.generator)
    return t.copy_(make_filled(fp, tuple(t.shape)))


def fill(blob: Blob, fp: caffe_pb2.FillerParameter) -> None:
    """Fill ``blob``'s data in place with make_filled's numbers on every device (drawn on the
    CPU, then moved, unless the blob already is float32 on the CPU)."""
    t = blob.tensor
    if _draws_like_make_filled(t):
        fill_(t, fp)
    else:
        t.copy_(make_filled(fp, tuple(t.shape)).to(t.device, t.dtype))
