"""Why ``reshape`` runs before every forward: when the input size changes (another batch size,
another image size), the tops and internal buffers must follow.

Run: python docs/examples/reshape_matters.py
"""

import numpy as np
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2


class RowNormalize(caffe.Layer):
    """top = bottom / ||bottom||_2 per row. Keeps the row norms for backward."""

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)  # follows the bottom, whatever its size
        self.norms = np.zeros((bottom[0].data.shape[0], 1), np.float32)

    def forward(self, bottom, top):
        self.norms[...] = np.linalg.norm(bottom[0].data, axis=1, keepdims=True)
        top[0].data[...] = bottom[0].data / self.norms

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, dy = top[0].data, top[0].diff
            bottom[0].diff[...] = (dy - y * np.sum(dy * y, axis=1, keepdims=True)) / self.norms


NET = """
layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "norm" type: "Python" bottom: "x" top: "y"
        python_param { module: "__main__" layer: "RowNormalize" } }
"""


def main():
    net = caffe.Net(text_format.Parse(NET, caffe_pb2.NetParameter()), caffe.TEST)
    net.blobs["x"].data[...] = [[3, 4, 0], [0, 0, 2]]
    print(net.forward()["y"])
    # A bigger batch: reshape the input blob; the layer's reshape resizes top and buffers.
    net.blobs["x"].reshape(5, 3)
    net.blobs["x"].data[...] = np.arange(1, 16).reshape(5, 3)
    out = net.forward()["y"]
    print("after reshape:", out.shape)
    assert out.shape == (5, 3) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)


if __name__ == "__main__":
    main()
