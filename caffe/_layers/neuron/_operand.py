"""Helpers shared by the neuron family: placing a parameter-like operand (Bias, Scale) on a
span of the bottom's axes, the ``scale * x + shift`` step of Power and Log, and a reusable copy
of a bottom for layers that run in place but need their input in backward (PReLU, Scale)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from caffe.errors import LayerSetupError
from caffe.layer import Layer


def _canonical_axis(layer: Layer, axis: int, shape: tuple[int, ...]) -> int:
    n = len(shape)
    if not -n <= axis < n:
        raise LayerSetupError(
            f"Layer '{layer.name}' ({layer.type}): axis {axis} is out of range for bottom "
            f"{shape}; use {-n}..{n - 1}")
    return axis + n if axis < 0 else axis


def learned_shape(layer: Layer, shape: tuple[int, ...], axis: int,
                  num_axes: int) -> tuple[int, ...]:
    """Shape of a learned operand covering ``num_axes`` axes of ``shape`` from ``axis``
    (-1: up to the last axis)."""
    start = _canonical_axis(layer, axis, shape)
    if num_axes < -1:
        raise LayerSetupError(
            f"Layer '{layer.name}' ({layer.type}): num_axes {num_axes} is invalid; use a "
            "non-negative count, or -1 to extend to the last axis of bottom[0]")
    if num_axes >= 0 and start + num_axes > len(shape):
        raise LayerSetupError(
            f"Layer '{layer.name}' ({layer.type}): num_axes {num_axes} from axis {start} "
            f"extends past bottom[0] {shape}")
    return shape[start:] if num_axes == -1 else shape[start:start + num_axes]


@dataclass(frozen=True)
class Span:
    """Where an operand of shape ``operand`` sits in a bottom: ``view`` is the operand shape
    padded with ones to the bottom's rank, ``reduce_dims`` the bottom axes it does not cover,
    ``outer``/``inner`` the element counts before and after the covered axes."""

    operand: tuple[int, ...]
    view: tuple[int, ...]
    reduce_dims: tuple[int, ...]
    outer: int
    inner: int

    def expand(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.view)

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a bottom-shaped tensor down to the operand's shape (``t`` itself when the
        operand covers every axis)."""
        if not self.reduce_dims:
            return t.reshape(self.operand)
        return t.sum(self.reduce_dims).reshape(self.operand)


def span(layer: Layer, shape: tuple[int, ...], operand: tuple[int, ...], axis: int,
         what: str) -> Span:
    """Check that ``operand`` matches ``shape`` from ``axis`` (ignored for a scalar operand,
    which Caffe places at axis 0) and describe the broadcast."""
    k = len(operand)
    start = 0 if k == 0 else _canonical_axis(layer, axis, shape)
    if shape[start:start + k] != operand:
        raise LayerSetupError(
            f"Layer '{layer.name}' ({layer.type}): the {what} shape {operand} does not match "
            f"bottom[0] {shape} at axes {start}..{start + k - 1}: they must be "
            f"{shape[start:start + k]}")
    n = len(shape)
    return Span(
        operand=operand,
        view=(1,) * start + operand + (1,) * (n - start - k),
        reduce_dims=tuple(range(start)) + tuple(range(start + k, n)),
        outer=math.prod(shape[:start]),
        inner=math.prod(shape[start + k:]),
    )


def operand_batch_axis(layer: Layer, i: int) -> int | None:
    """``batch_axis_of`` of Scale and Bias: the second bottom (the operand) has a batch axis only
    when its span starts at bottom 0's axis 0 (``layer.span``, made by reshape)."""
    return 0 if i == 0 or 0 not in layer.span.reduce_dims else None


def scale_shift(x: torch.Tensor, scale: float, shift: float, in_place: bool) -> torch.Tensor:
    """``scale * x + shift``, skipping identity steps as Caffe does. In place it writes into
    ``x``; otherwise it returns a new tensor, or ``x`` itself when both steps are identities."""
    if in_place:
        if scale != 1:
            x.mul_(scale)
        if shift != 0:
            x.add_(shift)
        return x
    if scale != 1:
        y = x * scale
        return y.add_(shift) if shift != 0 else y
    return x + shift if shift != 0 else x


def affine_(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None) -> None:
    """``x = x * scale (+ shift)`` in ``x``'s memory, broadcasting ``scale`` and ``shift``. On a
    GPU one ``addcmul`` pass (the pass is memory-bound: a second one costs as much again); on
    the CPU a ``mul_`` and an ``add_``, which measured faster there than one broadcasting
    ``addcmul``; the two steps too while autograd records them (an export), as it takes no
    out= arguments."""
    if shift is None:
        x.mul_(scale)
    elif x.is_cuda and not records(x, scale, shift):
        torch.addcmul(shift, x, scale, out=x)
    else:
        x.mul_(scale).add_(shift)


def records(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an op on ``tensors`` (one of them requires grad, as the
    parameters of a net being exported do): such an op may not take an out= argument."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def keep_copy(buffer: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x``, written into ``buffer`` when that has the same shape, dtype and
    device (no new allocation after the first forward)."""
    if (buffer is not None and buffer.shape == x.shape and buffer.dtype == x.dtype
            and buffer.device == x.device):
        return buffer.copy_(x)
    return x.clone()
