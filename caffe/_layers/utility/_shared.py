"""Helpers shared by the utility layers: layer-named errors, axis checks, and the base of the
layers whose top is a reshaped view of the bottom (Flatten, Reshape)."""

from __future__ import annotations

from collections.abc import Sequence

from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.layer import Layer


def where(layer: Layer) -> str:
    """``Layer 'name' (Type)``, the prefix of every error message."""
    return f"Layer '{layer.name}' ({layer.type})"


def bottom_name(layer: Layer, i: int) -> str:
    """The prototxt name of bottom ``i`` (or its index when the layer was built by hand)."""
    names = layer.layer_param.bottom
    return f"'{names[i]}'" if i < len(names) else f"#{i}"


def canonical_axis(layer: Layer, axis: int, shape: Sequence[int], param: str) -> int:
    """Map ``axis`` (negative counts from the end) into ``[0, len(shape))`` or raise an error
    naming the layer, the parameter and the allowed range."""
    n = len(shape)
    if not -n <= axis < n:
        allowed = f"{-n} to {n - 1}" if n else "none (the bottom is 0-d)"
        raise LayerSetupError(
            f"{where(layer)}: {param} {axis} is out of range for the bottom of shape "
            f"{tuple(shape)}; allowed values: {allowed}")
    return axis % n


def legacy_or_axis(layer: Layer, param, legacy: str, shape: tuple[int, ...]) -> int:
    """The axis of a Concat/Slice parameter: ``axis`` or the legacy non-negative field
    ``legacy`` (``concat_dim`` / ``slice_dim``), never both."""
    kind = legacy.split("_")[0]
    if param.HasField(legacy):
        value = getattr(param, legacy)
        if value >= len(shape):
            raise LayerSetupError(
                f"{where(layer)}: {kind}_param.{legacy} {value} is out of range for the bottom "
                f"of shape {shape}; allowed values: 0 to {len(shape) - 1}")
        return value
    return canonical_axis(layer, param.axis, shape, f"{kind}_param.axis")


def check_not_both(layer: Layer, param, legacy: str) -> None:
    """Refuse a Concat/Slice parameter that sets both ``axis`` and its legacy field."""
    if param.HasField("axis") and param.HasField(legacy):
        kind = legacy.split("_")[0]
        raise LayerSetupError(
            f"{where(layer)}: {kind}_param sets both axis ({param.axis}) and the legacy "
            f"{legacy} ({getattr(param, legacy)}); give only one of them")


class ViewLayer(Layer):
    """One bottom, one top holding the same elements in another shape: the top's data is a view
    of the bottom's, and backward hands the top's diff back reshaped (no copies, as Caffe's
    shared memory). Subclasses define ``top_shape``."""

    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def top_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        top[0].reshape(self.top_shape(bottom[0].shape))
        self.forward(bottom, top)

    def forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        top[0].tensor = bottom[0].tensor.reshape(top[0].shape)

    def backward(self, top: Sequence[Blob], propagate_down: Sequence[bool],
                 bottom: Sequence[Blob]) -> None:
        if propagate_down[0]:
            bottom[0].diff_tensor = top[0].diff_tensor.reshape(bottom[0].shape)
