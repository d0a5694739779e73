"""ArgMax: the indices (or values) of the ``top_k`` largest entries, as float.

With ``axis``: along that axis; top = bottom shape with that axis replaced by top_k, holding
indices, or the values when ``out_max_val``. Without: over each item's flattened entries
(axes 1..); top (N, 1, top_k) padded with 1s to the bottom's axes, or (N, 2, top_k, ...) with
``out_max_val``: the indices, then the values. Order as Caffe: descending by value, ties
broken by the larger index first. No backward."""

from __future__ import annotations

import math

import torch

from caffe._layers.utility._shared import canonical_axis, where
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("ArgMax")
class ArgMax(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    has_backward = False

    def setup(self, bottom, top):
        p = self.layer_param.argmax_param
        self.out_max_val = bool(p.out_max_val)
        self.top_k = int(p.top_k)
        shape = bottom[0].shape
        self.axis = canonical_axis(self, p.axis, shape, "argmax_param.axis") \
            if p.HasField("axis") else None
        if self.axis is not None:
            dim, what = shape[self.axis], f"the size of axis {self.axis}"
        else:
            dim, what = math.prod(shape[1:]), "the number of entries per item (axes 1..)"
        if not 1 <= self.top_k <= dim:
            raise LayerSetupError(
                f"{where(self)}: argmax_param.top_k {self.top_k} is out of range for the bottom "
                f"of shape {shape}; allowed: 1 to {what}, {dim}")
        self._reversed: torch.Tensor | None = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if not shape:
            raise LayerSetupError(f"{where(self)}: the bottom needs at least one axis; got a "
                                  "scalar blob of shape ()")
        if self.axis is not None:
            new = list(shape)
            new[self.axis] = self.top_k
            self.dim, self.view = self.axis, None
        else:
            # the entries of an item laid out along axis 2 of a tensor shaped like the top:
            # the results come out in the top's shape, with no moving of axes
            new = [1] * max(len(shape), 3)
            new[0], new[2] = shape[0], math.prod(shape[1:])
            self.dim, self.view = 2, tuple(new)
            new[1] = 2 if self.out_max_val else 1
            new[2] = self.top_k
        top[0].reshape(new)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        if self.view is not None:
            x = x.reshape(self.view)
        d, k = self.dim, self.top_k
        # on the reversed entries, torch's first maximum and a stable descending sort both put
        # the larger index first on ties, as Caffe does
        flipped = x.flip(d)
        if k > 1:
            values, order = torch.sort(flipped, dim=d, descending=True, stable=True)
            values, order = values.narrow(d, 0, k), order.narrow(d, 0, k)
        else:  # max with its index, even without out_max_val: on the CPU 3x faster than argmax
            values, order = flipped.max(d, keepdim=True)
        if self.out_max_val and self.view is None:
            top[0].tensor = values
            return
        index = torch.take(self._reversed_index(x, x.shape[d]), order)
        top[0].tensor = torch.cat([index, values], 1) if self.out_max_val else index

    def _reversed_index(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """n - 1, ..., 1, 0 in the dtype and on the device of ``x`` (kept between forwards):
        the original index of each position of the flipped entries."""
        r = self._reversed
        if r is None or r.shape[0] != n or r.dtype != x.dtype or r.device != x.device:
            r = self._reversed = torch.arange(n - 1, -1, -1, dtype=x.dtype, device=x.device)
        return r
