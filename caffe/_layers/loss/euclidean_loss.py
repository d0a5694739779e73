"""EuclideanLoss: loss = sum((a - b)^2) / (2 N), N = a.shape[0]; bottoms of equal count.
Backward: da = (a - b) / N * w, db = -(a - b) / N * w, w = the loss weight (top diff)."""

from __future__ import annotations

from caffe._layers.base import LossLayer
from caffe._layers.loss.labels import require_batch_axis
from caffe.errors import LayerSetupError
from caffe.registry import register_layer


@register_layer("EuclideanLoss")
class EuclideanLoss(LossLayer):
    no_force_backward_bottoms = ()

    def reshape(self, bottom, top):
        require_batch_axis(self, bottom[0], "the prediction (bottom 0)")
        super().reshape(bottom, top)
        if bottom[0].count_range(1) != bottom[1].count_range(1):
            raise LayerSetupError(
                f"Layer '{self.name}' (EuclideanLoss): inputs must have the same dimension; got "
                f"shapes {bottom[0].shape} and {bottom[1].shape}")

    def forward(self, bottom, top):
        self.diff = bottom[0].tensor - bottom[1].tensor.reshape(bottom[0].shape)
        top[0].tensor.fill_((self.diff * self.diff).sum() / bottom[0].shape[0] / 2)

    def backward(self, top, propagate_down, bottom):
        scale = top[0].diff_tensor / bottom[0].shape[0]
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                bottom[i].diff_tensor = (self.diff * (sign * scale)).reshape(bottom[i].shape)
