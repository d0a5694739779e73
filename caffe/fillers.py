"""Weight fillers, as Caffe's FillerParameter types: constant, uniform, gaussian (optionally
sparse), positive_unitball, xavier, msra and bilinear.

Random values come from the generator seeded by ``caffe.set_random_seed`` (drawn on the CPU and
then moved, so a seed gives the same weights on every device).
"""

from __future__ import annotations

import math

import torch

from caffe._common import STATE
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.proto import caffe_pb2


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    count = math.prod(shape)
    fan_in = count / shape[0] if shape and shape[0] else 0.0
    fan_out = count / shape[1] if len(shape) > 1 and shape[1] else 0.0
    return fan_in, fan_out


def _norm_n(fp: caffe_pb2.FillerParameter, shape: tuple[int, ...]) -> float:
    fan_in, fan_out = _fans(shape)
    if fp.variance_norm == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if fp.variance_norm == caffe_pb2.FillerParameter.FAN_OUT:
        return fan_out
    return fan_in


def make_filled(fp: caffe_pb2.FillerParameter, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 CPU tensor of ``shape`` filled as ``fp`` says."""
    g = STATE.generator
    kind = fp.type
    out = torch.empty(shape, dtype=torch.float32)
    if out.numel() == 0:
        return out
    if kind == "constant":
        return out.fill_(fp.value)
    if kind == "uniform":
        return out.uniform_(fp.min, fp.max, generator=g)
    if kind == "gaussian":
        out.normal_(fp.mean, fp.std, generator=g)
        if fp.sparse >= 0:
            if out.dim() < 1 or shape[0] == 0:
                raise LayerSetupError("gaussian filler with sparse needs a blob with num > 0")
            p = fp.sparse / shape[0]
            out.mul_(torch.bernoulli(torch.full(shape, min(max(p, 0.0), 1.0)), generator=g))
        return out
    if kind == "positive_unitball":
        out.uniform_(0.0, 1.0, generator=g)
        flat = out.view(shape[0], -1)
        flat.div_(flat.sum(dim=1, keepdim=True))
        return out
    if kind == "xavier":
        n = _norm_n(fp, shape)
        scale = math.sqrt(3.0 / n)
        return out.uniform_(-scale, scale, generator=g)
    if kind == "msra":
        n = _norm_n(fp, shape)
        return out.normal_(0.0, math.sqrt(2.0 / n), generator=g)
    if kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise LayerSetupError(
                f"bilinear filler needs a 4-D blob with square kernels, got shape {shape}")
        f = math.ceil(shape[3] / 2.0)
        c = (shape[3] - 1) / (2.0 * f)
        x = torch.arange(shape[3], dtype=torch.float64)
        y = torch.arange(shape[2], dtype=torch.float64)
        k = (1 - (x / f - c).abs())[None, :] * (1 - (y / f - c).abs())[:, None]
        return out.copy_(k.to(torch.float32).expand(shape))
    raise LayerSetupError(
        f"Unknown filler type '{kind}'; use one of constant, uniform, gaussian, "
        "positive_unitball, xavier, msra, bilinear")


def fill(blob: Blob, fp: caffe_pb2.FillerParameter) -> None:
    """Fill ``blob``'s data in place."""
    t = blob.tensor
    t.copy_(make_filled(fp, tuple(t.shape)).to(t.device, t.dtype))
