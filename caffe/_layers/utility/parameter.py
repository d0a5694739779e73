"""Parameter: no bottom; one top that IS the layer's parameter blob, of shape
``parameter_param.shape`` (zeros unless loaded). The top shares the blob's data and diff, as in
Caffe: whatever the consumers write into the top's diff is the parameter's diff."""

from __future__ import annotations

from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Parameter")
class Parameter(Layer):
    exact_num_bottom_blobs = 0
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        if not self.blobs:
            self.blobs.add_blob(*self.layer_param.parameter_param.shape.dim)

    def reshape(self, bottom, top):
        top[0].reshape(self.blobs[0].shape)

    def forward(self, bottom, top):
        top[0].tensor = self.blobs[0].tensor
        top[0].diff_tensor = self.blobs[0].diff_tensor

    def backward(self, top, propagate_down, bottom):
        # the consumers replace the top's diff tensor: make it the parameter's diff again
        self.blobs[0].diff_tensor = top[0].diff_tensor
