"""A layer with learnable parameters (``self.blobs``), trained with a loss_weight, saved and
loaded like any Caffe layer's weights. Run: python docs/examples/learnable_scale.py
"""

import os
import tempfile

import numpy as np
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2


class ChannelScale(caffe.Layer):
    """top[:, c] = w[c] * bottom[:, c]; w is learnable, initialized to 1."""

    def setup(self, bottom, top):
        if not self.blobs:  # (always empty here: a .caffemodel is copied in after setup)
            self.blobs.add_blob(bottom[0].data.shape[1])
            self.blobs[0].data[...] = 1.0

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        # parameter diffs ACCUMULATE (+=); bottom diffs are overwritten
        self.blobs[0].diff[...] += (top[0].diff * bottom[0].data).sum(axis=0)
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * self.blobs[0].data


NET = """
layer { name: "input" type: "Input" top: "x" top: "target"
        input_param { shape { dim: 16 dim: 3 } } }
layer { name: "scale" type: "Python" bottom: "x" top: "y"
        python_param { module: "__main__" layer: "ChannelScale" } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "target" top: "loss"
        loss_weight: 0.5 }
"""


def main():
    param = text_format.Parse(NET, caffe_pb2.NetParameter())
    net = caffe.Net(param, caffe.TRAIN)
    x = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.blobs["target"].data[...] = x * [2.0, -1.0, 0.5]
    for _ in range(300):
        net.clear_param_diffs()
        net.forward()
        net.backward()
        net.params["scale"][0].diff[...] *= 0.5  # learning rate
        net.update()
    print("learned scales:", net.params["scale"][0].data.round(3))
    assert np.allclose(net.params["scale"][0].data, [2.0, -1.0, 0.5], atol=1e-2)
    path = os.path.join(tempfile.mkdtemp(), "scale.caffemodel")
    net.save(path)
    again = caffe.Net(param, caffe.TEST, weights=path)
    assert np.array_equal(again.params["scale"][0].data, net.params["scale"][0].data)
    print("saved and reloaded:", path)


if __name__ == "__main__":
    main()
