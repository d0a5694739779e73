"""A layer with two tops: per-row mean and per-row max. ``top`` is a list because a layer may
produce several outputs; each top[i] is a separate blob with its own shape.

Run: python docs/examples/multi_top.py
"""

import numpy as np
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2


class MeanAndMax(caffe.Layer):
    """bottom: (N, D). top[0]: (N,) row means; top[1]: (N,) row maxima."""

    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 2

    def reshape(self, bottom, top):
        n = bottom[0].data.shape[0]
        top[0].reshape(n)
        top[1].reshape(n)

    def forward(self, bottom, top):
        x = bottom[0].data
        top[0].data[...] = x.mean(axis=1)
        self.argmax = x.argmax(axis=1)
        top[1].data[...] = x.max(axis=1)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n, d = bottom[0].data.shape
        grad = np.repeat(top[0].diff[:, None] / d, d, axis=1)  # from the mean
        grad[np.arange(n), self.argmax] += top[1].diff  # from the max
        bottom[0].diff[...] = grad


NET = """
force_backward: true
layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "stats" type: "Python" bottom: "x" top: "mean" top: "max"
        python_param { module: "__main__" layer: "MeanAndMax" } }
"""


def main():
    net = caffe.Net(text_format.Parse(NET, caffe_pb2.NetParameter()), caffe.TRAIN)
    net.blobs["x"].data[...] = [[1, 5, 2, 0], [3, 3, 9, 1]]
    out = net.forward()
    print("mean:", out["mean"], "max:", out["max"])
    assert np.allclose(out["mean"], [2, 4]) and np.allclose(out["max"], [5, 9])
    grads = net.backward(mean=np.ones(2, np.float32), max=np.ones(2, np.float32))
    print("d(mean + max)/dx:\n", grads["x"])
    assert np.allclose(grads["x"], [[0.25, 1.25, 0.25, 0.25], [0.25, 0.25, 1.25, 0.25]])


if __name__ == "__main__":
    main()
