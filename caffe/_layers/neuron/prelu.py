"""PReLU: y = max(x, 0) + a_c * min(x, 0) with a learned slope per channel (axis 1), or one
shared slope (``prelu_param.channel_shared``). The slope blob has shape (C,) or () and is
filled by ``prelu_param.filler`` (default constant 0.25).

Backward (torch's fused PReLU kernel): da_c += sum over the channel of dy * x * (x <= 0);
dx = dy where x > 0, else a_c * dy.
The bottom needs at least two axes. Run in place, the layer keeps a copy of its input for the
backward, as Caffe does."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caffe._layers.base import NeuronLayer
from caffe._layers.neuron._operand import keep_copy, records
from caffe.errors import LayerSetupError
from caffe.fillers import fill
from caffe.proto import caffe_pb2
from caffe.registry import register_layer


@register_layer("PReLU")
class PReLU(NeuronLayer):
    def setup(self, bottom, top):
        self._check_rank(bottom)
        p = self.layer_param.prelu_param
        self.channel_shared = bool(p.channel_shared)
        channels = bottom[0].shape[1]
        if not self.blobs:
            self.blobs.add_blob(*(() if self.channel_shared else (channels,)))
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(
                type="constant", value=0.25)
            fill(self.blobs[0], filler)
        expected = 1 if self.channel_shared else channels
        if self.blobs[0].count != expected:
            raise LayerSetupError(
                f"Layer '{self.name}' (PReLU): the slope blob has {self.blobs[0].count} values "
                f"but channel_shared={self.channel_shared} with {channels} channels needs "
                f"{expected}")
        self._saved: torch.Tensor | None = None

    def _check_rank(self, bottom):
        if len(bottom[0].shape) < 2:
            raise LayerSetupError(
                f"Layer '{self.name}' (PReLU): the bottom needs at least 2 axes (N, C, ...); "
                f"got shape {bottom[0].shape}")

    def reshape(self, bottom, top):
        self._check_rank(bottom)
        super().reshape(bottom, top)

    def _slope(self, ndim: int) -> torch.Tensor:
        a = self.blobs[0].tensor
        return a.reshape(()) if self.channel_shared else a.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, bottom, top):
        x, a = bottom[0].tensor, self.blobs[0].tensor
        in_place = top[0] is bottom[0]
        if in_place:
            self._saved = saved = keep_copy(self._saved, x)
        if in_place and not records(x, a):
            x.mul_(self._slope(x.dim()))
            torch.where(saved > 0, saved, x, out=x)
        else:
            top[0].tensor = F.prelu(x, a.reshape(-1))

    def backward(self, top, propagate_down, bottom):
        want_da = self._param_propagate_down[0]
        if not (want_da or propagate_down[0]):
            return
        x = self._saved if top[0] is bottom[0] else bottom[0].tensor
        # one fused pass: dx = dy where x > 0 else a * dy, and the per-element dy * x * (x <= 0)
        dx, g = torch.ops.aten._prelu_kernel_backward(
            top[0].diff_tensor, x, self._slope(x.dim()))
        if want_da:
            da = g.sum() if self.channel_shared else g.sum((0,) + tuple(range(2, x.dim())))
            self.blobs[0].diff_tensor.add_(da.reshape(self.blobs[0].shape))
        if propagate_down[0]:
            bottom[0].diff_tensor = dx
