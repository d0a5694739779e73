"""Reshape: give the bottom a new shape without copying. ``reshape_param.shape`` replaces the
bottom axes ``axis`` .. ``axis + num_axes`` (``num_axes: -1``: to the end; a negative ``axis``
counts from after the last axis, so -1 appends). In the new dims 0 copies the bottom dim at
the same position and one -1 is inferred from the element count. The top is a view of the
bottom; the bottom's diff is the top's diff reshaped."""

from __future__ import annotations

import math

from caffe._layers.utility._shared import ViewLayer, where
from caffe.errors import LayerSetupError
from caffe.registry import register_layer


@register_layer("Reshape")
class Reshape(ViewLayer):
    def setup(self, bottom, top):
        super().setup(bottom, top)
        p = self.layer_param.reshape_param
        self.dims = [int(d) for d in p.shape.dim]
        self.copy_axes = [i for i, d in enumerate(self.dims) if d == 0]
        inferred = [i for i, d in enumerate(self.dims) if d == -1]
        bad = [d for d in self.dims if d < -1]
        if len(inferred) > 1 or bad:
            raise LayerSetupError(
                f"{where(self)}: reshape_param.shape {self.dims} is invalid: "
                + (f"it has {len(inferred)} dims of -1" if not bad else f"dims {bad} < -1")
                + "; allowed: positive dims, 0 (copy the bottom dim) and at most one -1 "
                "(inferred)")
        self.inferred_axis = inferred[0] if inferred else None
        if p.num_axes < -1:
            raise LayerSetupError(
                f"{where(self)}: reshape_param.num_axes {p.num_axes} is invalid; allowed: "
                "-1 (all remaining axes) or a count >= 0")

    def top_shape(self, shape):
        p = self.layer_param.reshape_param
        n = len(shape)
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        if not 0 <= start <= n:
            raise LayerSetupError(
                f"{where(self)}: reshape_param.axis {p.axis} is out of range for the bottom of "
                f"shape {shape}; allowed values: {-n - 1} to {n}")
        end = n if p.num_axes == -1 else start + p.num_axes
        if end > n:
            raise LayerSetupError(
                f"{where(self)}: reshape_param.axis {p.axis} + num_axes {p.num_axes} = {end} "
                f"goes past the {n} axes of the bottom of shape {shape}")
        new = list(self.dims)
        for i in self.copy_axes:
            if start + i >= n:
                raise LayerSetupError(
                    f"{where(self)}: reshape_param.shape {self.dims} has a 0 at position {i}, "
                    f"but the bottom of shape {shape} has no axis {start + i} to copy")
            new[i] = shape[start + i]
        count = math.prod(shape)
        if self.inferred_axis is not None:
            known = math.prod(shape[:start]) * math.prod(shape[end:]) * math.prod(
                d for i, d in enumerate(new) if i != self.inferred_axis)
            if known == 0 or count % known:
                raise LayerSetupError(
                    f"{where(self)}: reshape_param.shape {self.dims} cannot fit the bottom of "
                    f"shape {shape}: its {count} elements are not divisible by the product of "
                    f"the other dims ({known})")
            new[self.inferred_axis] = count // known
        result = shape[:start] + tuple(new) + shape[end:]
        if math.prod(result) != count:
            raise LayerSetupError(
                f"{where(self)}: reshape_param.shape {self.dims} gives the top shape {result} "
                f"of {math.prod(result)} elements, but the bottom of shape {shape} has {count}; "
                "the counts must match")
        return result
