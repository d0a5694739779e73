"""The gradient checker catches a wrong backward, which Caffe would have run silently.

Run: python docs/examples/catch_wrong_backward.py
"""

import numpy as np
import torch

import caffe
from caffe.errors import GradientCheckError
from caffe.proto import caffe_pb2
from caffe.testing import GradientChecker, make_blobs


class Sigmoid(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 1 / (1 + np.exp(-bottom[0].data))

    def backward(self, top, propagate_down, bottom):
        y = top[0].data
        bottom[0].diff[...] = top[0].diff * y  # wrong: should be y * (1 - y)


def main():
    layer = Sigmoid(caffe_pb2.LayerParameter(name="sig", type="Python"))
    x = make_blobs(np.random.default_rng(0).standard_normal((2, 3)))
    try:
        GradientChecker().check_gradient(layer, x, [caffe.Blob(dtype=torch.float64)])
    except GradientCheckError as e:
        print("caught:", e)
    else:
        raise SystemExit("the wrong backward was not caught")


if __name__ == "__main__":
    main()
