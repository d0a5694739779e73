"""Spatial correspondence between the tops of a NetSpec net, as pycaffe's ``caffe.coord_map``:
how a coordinate in one top maps to a coordinate in another, so that fully convolutional nets
(FCN) can compute the offsets of their Crop layers.

A map is ``(axis, a, b)``: output coordinate ``y = a * x + b`` for the input coordinate ``x``,
for every spatial axis after ``axis`` (``a`` and ``b`` are arrays with one entry per spatial
axis, or scalars). Convolution / Pooling / Im2col with kernel ``k`` (dilated), stride ``s`` and
pad ``p`` map with ``a = 1/s``, ``b = (p - (k - 1)/2) / s``; Deconvolution inverts that
(``a = s``, ``b = (k - 1)/2 - p``); Crop shifts by ``-offset``; element-wise layers are the
identity ``(None, 1, 0)``. Other layer types have no map and end the search there.
"""

from __future__ import annotations

import numpy as np

from caffe.errors import CaffeError
from caffe.net_spec import Function, Top
from caffe.net_spec import layers as L

PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Clip", "Dropout", "Eltwise",
                       "ELU", "Log", "LRN", "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale",
                       "Sigmoid", "Split", "Swish", "TanH", "Threshold"]

_CONV_LIKE = ("Convolution", "Pooling", "Im2col", "Deconvolution")
_LEGACY_FIELDS = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"}


class UndefinedMapException(CaffeError):
    """The layer type has no coordinate mapping (the search does not go through it)."""


class AxisMismatchException(CaffeError, ValueError):
    """Two maps over different axes cannot be composed."""


class CoordMapError(CaffeError, AssertionError):
    """A map cannot be computed or used: unsupported parameters, or a crop that would need a
    scale, a negative offset or a fractional offset."""


class UnconnectedTopsError(CaffeError, RuntimeError):
    """No common ancestor reachable through layers with a coordinate map."""


def _own_params(fn: Function) -> dict:
    """The layer's spatial parameters: its ``<type>_param`` dict if given, else its keyword
    arguments."""
    key = "pooling_param" if fn.type_name == "Pooling" else "convolution_param"
    return fn.params.get(key, fn.params)


def conv_params(fn: Function) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(axis, stride, dilated kernel extent, pad) of a Convolution-like or Pooling layer."""
    params = _own_params(fn)
    legacy = _LEGACY_FIELDS & (set(fn.params) | set(params))
    if legacy:
        raise CoordMapError(
            f"{fn.type_name} layer: coordinate mapping does not support the legacy _h/_w "
            f"parameters {sorted(legacy)}; give kernel_size/stride/pad (one per axis)")
    if params.get("global_pooling"):
        raise UndefinedMapException(f"{fn.type_name} layer with global_pooling")
    if "kernel_size" not in params:
        raise CoordMapError(f"{fn.type_name} layer: coordinate mapping needs its kernel_size")
    axis = params.get("axis", 1)
    ks = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    return (axis, np.array(params.get("stride", 1), ndmin=1), (ks - 1) * dilation + 1,
            np.array(params.get("pad", 0), ndmin=1))


def crop_params(fn: Function) -> tuple[int, np.ndarray]:
    """(axis, offset) of a Crop layer, with Caffe's defaults (axis 2, offset 0)."""
    params = fn.params.get("crop_param", fn.params)
    return params.get("axis", 2), np.array(params.get("offset", 0), ndmin=1)


def coord_map(fn: Function) -> tuple:
    """The map (axis, a, b) from a layer's bottom coordinates to its top coordinates."""
    if fn.type_name in _CONV_LIKE:
        axis, stride, ks, pad = conv_params(fn)
        if fn.type_name == "Deconvolution":
            return axis, stride, (ks - 1) / 2 - pad
        return axis, 1 / stride, (pad - (ks - 1) / 2) / stride
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset
    raise UndefinedMapException(f"{fn.type_name} layers have no coordinate mapping")


def compose(base_map: tuple, next_map: tuple) -> tuple:
    """Apply ``next_map`` after ``base_map``: scales multiply, the second shift is scaled by
    the first scale."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        ax = ax2
    elif ax2 is None or ax1 == ax2:
        ax = ax1
    else:
        raise AxisMismatchException(f"cannot compose a map over axis {ax1} with one over {ax2}")
    return ax, a1 * a2, a1 * b2 + b1


def inverse(coord_map: tuple) -> tuple:
    """The map back from output to input coordinates."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _mappable_bottoms(top: Top) -> tuple:
    """Bottoms whose coordinates map to ``top``: all of them, except for Crop, whose second
    bottom only gives the output size."""
    bottoms = top.fn.inputs
    return bottoms[:1] if top.fn.type_name == "Crop" else bottoms


def _walk(start: Top):
    """Yield (top, map from top to ``start``) for every top reachable backwards from
    ``start`` through layers with a coordinate map."""
    maps = {start: (None, 1, 0)}
    frontier = [start]
    while frontier:
        top = frontier.pop()
        yield top, maps[top]
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            if bottom not in maps:
                maps[bottom] = compose(maps[top], step)
                frontier.append(bottom)


def coord_map_from_to(top_from: Top, top_to: Top) -> tuple:
    """The map (axis, a, b) from coordinates of ``top_from`` to coordinates of ``top_to``,
    through their nearest common ancestor."""
    from_maps = dict(_walk(top_from))
    for top, to_map in _walk(top_to):
        if top in from_maps:
            return compose(to_map, inverse(from_maps[top]))
    raise UnconnectedTopsError(
        f"Could not compute the map between the {top_from.fn.type_name} top and the "
        f"{top_to.fn.type_name} top; are they connected by spatial layers (Convolution, "
        f"Pooling, Deconvolution, Crop, element-wise)?")


def crop(top_from: Top, top_to: Top) -> Top:
    """A Crop layer that crops ``top_from`` to ``top_to``, its axis and offsets computed from
    the coordinate map between them."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    a, b = np.asarray(a), np.asarray(b)
    if ax is None:
        raise CoordMapError("the two tops are related by element-wise layers only: there is "
                            "nothing to crop")
    if not (a == 1).all():
        raise CoordMapError(f"scale mismatch on crop (a = {a}): the two tops have different "
                            "strides relative to their common input")
    if not (b <= 0).all():
        raise CoordMapError(f"cannot crop negative offset (b = {b}): the top to crop is "
                            "smaller than the reference top")
    if not (np.round(b) == b).all():
        raise CoordMapError(f"cannot crop noninteger offset (b = {b})")
    offsets = [int(v) for v in -np.round(b).astype(int)]
    return L.Crop(top_from, top_to, crop_param=dict(axis=ax + 1, offset=offsets))
