"""Flatten: merge axes ``axis`` .. ``end_axis`` (inclusive; negative counts from the end) into
one. bottom (d0, ..., dn) -> top (d0, ..., d_{axis-1}, prod(d_axis..d_end), d_{end+1}, ...).
The top is a view of the bottom; the bottom's diff is the top's diff reshaped."""

from __future__ import annotations

import math

from caffe._layers.utility._shared import ViewLayer, canonical_axis, where
from caffe.errors import LayerSetupError
from caffe.registry import register_layer


@register_layer("Flatten")
class Flatten(ViewLayer):
    def top_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        p = self.layer_param.flatten_param
        start = canonical_axis(self, p.axis, shape, "flatten_param.axis")
        end = canonical_axis(self, p.end_axis, shape, "flatten_param.end_axis")
        if end < start - 1:
            raise LayerSetupError(
                f"{where(self)}: flatten_param.end_axis {p.end_axis} (axis {end}) comes before "
                f"flatten_param.axis {p.axis} (axis {start}) for the bottom of shape {shape}; "
                f"end_axis must be at least axis - 1")
        return shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]
