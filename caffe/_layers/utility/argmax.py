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

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if not shape:
            raise LayerSetupError(f"{where(self)}: the bottom needs at least one axis; got a "
                                  "scalar blob of shape ()")
        if self.axis is not None:
            new = list(shape)
            new[self.axis] = self.top_k
        else:
            new = [1] * max(len(shape), 3)
            new[0] = shape[0]
            new[1] = 2 if self.out_max_val else 1
            new[2] = self.top_k
        top[0].reshape(new)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        x = x.movedim(self.axis, -1) if self.axis is not None else x.reshape(x.shape[0], -1)
        dim = x.shape[-1]
        # on the reversed entries, torch's first maximum and a stable descending sort both put
        # the larger index first on ties, as Caffe does
        if self.top_k == 1:
            values, order = torch.max(x.flip(-1), dim=-1, keepdim=True)
        else:
            values, order = torch.sort(x.flip(-1), dim=-1, descending=True, stable=True)
            values, order = values[..., :self.top_k], order[..., :self.top_k]
        index = (dim - 1 - order).to(x.dtype)
        if self.axis is not None:
            y = (values if self.out_max_val else index).movedim(-1, self.axis)
        else:
            y = torch.cat([index, values], -1) if self.out_max_val else index
        top[0].tensor = y.reshape(top[0].shape)
