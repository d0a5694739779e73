"""Helpers shared by the loss layers and Accuracy: reading integer labels, range checks with
errors that name the layer, the valid-label mask and normalizer of ``ignore_label``, Caffe's
legacy (num, channels, height, width) shape checks, and the refusal to backpropagate into
labels.

Range checks of labels (and of BatchReindex's indices) wait for the device, so off the CPU they
run only when the environment variable CAFFE_CHECK_LABELS=1 is set (``labels_checked_on``)."""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch

from caffe._common import tracing
from caffe._layers.base import normalizer
from caffe._layers.neuron.softmax import softmax_view
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.proto import caffe_pb2

#: Caffe's kLOG_THRESHOLD: probabilities are clamped to it before a log.
LOG_THRESHOLD = 1e-20


def int_labels(t: torch.Tensor) -> torch.Tensor:
    """Labels stored as floats, as integers the way C++ ``static_cast<int>`` makes them
    (truncation toward zero)."""
    return t.to(torch.long)


def labels_checked_on(device: torch.device) -> bool:
    """Whether to range-check labels (or BatchReindex's indices) on ``device``: always on the
    CPU; elsewhere the check would wait for the device every forward (Caffe only has a
    debug-build check there), so only when the environment variable CAFFE_CHECK_LABELS is 1."""
    if tracing():  # an exported program has no checks (a check is a host read)
        return False
    return device.type == "cpu" or os.environ.get("CAFFE_CHECK_LABELS") == "1"


def all_in_range(values: torch.Tensor, stop: int) -> bool:
    """Whether every entry of the integer tensor ``values`` lies in [0, stop): one min/max
    pass and one read (a wait for the device)."""
    if not values.numel():
        return True
    lo, hi = torch.aminmax(values)
    return int(lo) >= 0 and int(hi) < stop


def check_label_range(layer, labels: torch.Tensor, num_classes: int,
                      ignore: int | None) -> None:
    """``check_labels`` behind one cheap min/max look: labels all in [0, num_classes) need no
    other test, whatever the ignore label."""
    if not all_in_range(labels, num_classes):
        check_labels(layer, labels, num_classes, ignore)


def valid_labels(labels: torch.Tensor,
                 ignore: int | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(mask of the labels that count, or None when nothing is ignored; the labels with the
    ignored ones replaced by 0, safe to index with)."""
    if ignore is None:
        return None, labels
    valid = labels != ignore
    return valid, labels * valid


def valid_normalizer(mode: int, outer: int, inner: int, valid: torch.Tensor | None,
                     dtype: torch.dtype) -> float | torch.Tensor:
    """Caffe's normalizer; with ignored labels in VALID mode the count of valid labels stays a
    tensor (no wait for the device), clamped to at least 1 like ``normalizer``."""
    if valid is not None and mode == caffe_pb2.LossParameter.VALID:
        return valid.sum(dtype=dtype).clamp_min_(1)
    return normalizer(mode, outer, inner, -1)


def check_labels(layer, labels: torch.Tensor, num_classes: int, ignore: int | None) -> None:
    """Raise naming the layer if a (non-ignored) label lies outside [0, num_classes); on a GPU
    only with CAFFE_CHECK_LABELS=1 (see ``labels_checked_on``)."""
    if not labels_checked_on(labels.device):
        return
    bad = (labels < 0) | (labels >= num_classes)
    if ignore is not None:
        bad &= labels != ignore
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise LayerSetupError(
            f"Layer '{layer.name}' ({layer.type}): label {value} is out of range; labels must "
            f"lie in [0, {num_classes})" + ("" if ignore is None else
                                           f" or equal ignore_label {ignore}"))


class ClassLayout(NamedTuple):
    """Where the classes lie in a blob of scores: the class ``axis``, ``outer`` (items before
    it), ``channels`` (classes), ``inner`` (positions after it); ``view``, the scores as
    (outer, C[, inner]) for work along dim 1 (no inner axis when it is 1: torch's fast
    last-axis kernels), and ``label_view``, the labels as (outer, 1[, inner]) to index them."""

    axis: int
    outer: int
    channels: int
    inner: int
    view: tuple[int, ...]
    label_view: tuple[int, ...]


def class_layout(layer, scores: Blob, labels: Blob, axis: int, axis_name: str) -> ClassLayout:
    """The ClassLayout of ``scores`` with classes at ``axis`` (named ``axis_name`` in errors),
    raising naming the layer unless ``labels`` holds one label per item and position."""
    shape = scores.shape
    axis = scores.canonical_axis(axis)
    outer, channels, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    if outer * inner != labels.count:
        raise LayerSetupError(
            f"Layer '{layer.name}' ({layer.type}): number of labels must match number of "
            f"predictions; scores {shape} with {axis_name} {axis} need {outer * inner} labels, "
            f"got {labels.count} (shape {labels.shape})")
    view = softmax_view(shape, axis)
    return ClassLayout(axis, outer, channels, inner, view, (outer, 1) + view[2:])


def legacy_shape(layer, blob: Blob, what: str) -> tuple[int, int, int, int]:
    """(num, channels, height, width) of a blob of at most 4 axes (missing axes count as 1),
    as Caffe's legacy accessors; more axes raise naming the layer."""
    shape = blob.shape
    if len(shape) > 4:
        raise LayerSetupError(
            f"Layer '{layer.name}' ({layer.type}): {what} must have at most 4 axes "
            f"(num, channels, height, width); got shape {shape}")
    dims = tuple(shape) + (1,) * (4 - len(shape))
    return dims[0], dims[1], dims[2], dims[3]


def require_batch_axis(layer, blob: Blob, what: str) -> None:
    """Raise naming the layer when ``blob`` is a scalar (it has no batch axis)."""
    if not blob.shape:
        raise LayerSetupError(
            f"Layer '{layer.name}' ({layer.type}): {what} needs at least one axis (the batch); "
            "got a scalar blob of shape ()")


def require_one_per_item(layer, blob: Blob, what: str) -> None:
    """Caffe's CHECKs that channels, height and width of ``blob`` are 1 (one value per item)."""
    _, c, h, w = legacy_shape(layer, blob, what)
    if (c, h, w) != (1, 1, 1):
        raise LayerSetupError(
            f"Layer '{layer.name}' ({layer.type}): {what} must hold one value per item "
            f"(channels, height and width 1); got shape {blob.shape}")

