"""A layer written with torch ops and no backward: autograd supplies it. With
``torch_blobs = True`` the layer sees torch tensors on the compute device (no host copies in
GPU mode). Run: python docs/examples/torch_layer.py
"""

import numpy as np
import torch
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2
from caffe.testing import GradientChecker, make_blobs


class Swish(caffe.Layer):
    """y = x * sigmoid(beta * x) with a learnable beta."""

    torch_blobs = True  # bottom[i].data / top[i].data are torch tensors

    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs[0].data[...] = 1.0

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        x, beta = bottom[0].data, self.blobs[0].tensor
        top[0].data = x * torch.sigmoid(beta * x)  # no backward(): autograd provides it


NET = """
force_backward: true
layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "swish" type: "Python" bottom: "x" top: "y"
        python_param { module: "__main__" layer: "Swish" } }
"""


def main():
    net = caffe.Net(text_format.Parse(NET, caffe_pb2.NetParameter()), caffe.TRAIN)
    net.blobs["x"].data[...] = [[-1, 0, 1], [2, -2, 0.5]]
    net.forward()
    net.blobs["y"].diff[...] = 1
    net.backward()
    print("dy/dx:", net.blobs["x"].diff)
    print("dy/dbeta:", net.params["swish"][0].diff)
    layer = Swish(caffe_pb2.LayerParameter(name="swish", type="Python"))
    GradientChecker(1e-3, 1e-3).check_gradient(
        layer, make_blobs(np.random.default_rng(0).standard_normal((2, 3))),
        [caffe.Blob(dtype=torch.float64)])
    print("autograd backward passes the gradient checker")


if __name__ == "__main__":
    main()
