"""Embed: a lookup table. bottom: indices in [0, input_dim) stored as float integers, any
shape S; W: (input_dim, num_output); b: (num_output,) when ``bias_term``; top: S + (num_output,)
with top[..., :] = W[index] + b. Backward accumulates the top diff into the used rows of W (a
repeated index adds up) and its sum into b; the indices get no diff."""

from __future__ import annotations

import torch

from caffe._layers.loss.labels import all_in_range, labels_checked_on
from caffe._layers.utility._shared import bottom_name, where
from caffe.errors import LayerSetupError
from caffe.fillers import fill
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Embed")
class Embed(Layer):
    graph_safe = False
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    no_force_backward_bottoms = (0,)

    def setup(self, bottom, top):
        p = self.layer_param.embed_param
        for field in ("num_output", "input_dim"):
            if getattr(p, field) <= 0:
                raise LayerSetupError(
                    f"{where(self)}: embed_param.{field} must be positive, got "
                    f"{getattr(p, field)}")
        self.num_output = int(p.num_output)
        self.input_dim = int(p.input_dim)
        self.bias_term = bool(p.bias_term)
        if self.blobs:
            return
        self.blobs.add_blob(self.input_dim, self.num_output)
        fill(self.blobs[0], p.weight_filler)
        if self.bias_term:
            self.blobs.add_blob(self.num_output)
            fill(self.blobs[1], p.bias_filler)

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.num_output,))

    def _indices(self, bottom) -> torch.Tensor:
        values = bottom[0].tensor.reshape(-1)
        idx = values.to(torch.int64)
        if labels_checked_on(idx.device) and not all_in_range(idx, self.input_dim):
            bad = (idx < 0) | (idx >= self.input_dim)
            raise LayerSetupError(
                f"{where(self)}: index {float(values[bad][0]):g} in bottom "
                f"{bottom_name(self, 0)} is out of range; allowed: 0 to {self.input_dim - 1} "
                f"(embed_param.input_dim {self.input_dim})")
        return idx

    def forward(self, bottom, top):
        y = self.blobs[0].tensor.index_select(0, self._indices(bottom))
        if self.bias_term:
            y = y + self.blobs[1].tensor
        top[0].tensor = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff_tensor.reshape(-1, self.num_output)
        if self._param_propagate_down[0]:
            self.blobs[0].diff_tensor.index_add_(0, self._indices(bottom), dy)
        if self.bias_term and self._param_propagate_down[1]:
            self.blobs[1].diff_tensor.add_(dy.sum(0))
