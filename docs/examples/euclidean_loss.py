"""The classic Python layer: a Euclidean loss with two bottoms (prediction, label).

Run: python docs/examples/euclidean_loss.py
"""

import numpy as np
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2


class EuclideanLossLayer(caffe.Layer):
    """loss = sum((prediction - label)^2) / (2 N). bottom: [prediction, label], top: [loss]."""

    # Declared blob counts are checked before setup, with a message naming the layer.
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        # Runs once: read parameters (self.param_str), create learnable blobs (none here).
        pass

    def reshape(self, bottom, top):
        # Runs before every forward: the bottoms' shapes may have changed (new batch size).
        if bottom[0].count != bottom[1].count:
            raise ValueError(f"prediction has {bottom[0].count} values, label "
                             f"{bottom[1].count}: they must match element for element")
        self.diff = np.zeros_like(bottom[0].data)  # buffer sized for this batch
        top[0].reshape(1)  # the loss is one number

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data  # kept: backward needs it
        top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.0

    def backward(self, top, propagate_down, bottom):
        for i in range(2):  # one entry per bottom: prediction (0), label (1)
            if not propagate_down[i]:
                continue  # nobody needs this gradient (e.g. the label): skip the work
            sign = 1 if i == 0 else -1
            # top[0].diff holds the loss weight (1 by default): scale by it
            bottom[i].diff[...] = sign * self.diff / bottom[i].num * top[0].diff[0]


NET = """
name: "linear_regression"
layer { name: "input" type: "Input" top: "x" top: "y"
        input_param { shape { dim: 8 dim: 3 } shape { dim: 8 dim: 1 } } }
layer { name: "fc" type: "InnerProduct" bottom: "x" top: "pred"
        inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "Python" bottom: "pred" bottom: "y" top: "loss" loss_weight: 1
        python_param { module: "__main__" layer: "EuclideanLossLayer" } }
"""


def main():
    caffe.set_random_seed(0)
    net = caffe.Net(text_format.Parse(NET, caffe_pb2.NetParameter()), caffe.TRAIN)
    rng = np.random.default_rng(0)
    net.blobs["x"].data[...] = rng.standard_normal((8, 3))
    net.blobs["y"].data[...] = net.blobs["x"].data @ [[1.0], [-2.0], [0.5]]
    for step in range(200):  # plain gradient descent through net.update()
        net.clear_param_diffs()
        net.forward()
        net.backward()
        for p in net.learnable_params:
            p.diff[...] *= 0.1
        net.update()
        if step % 50 == 0:
            print(f"step {step}: loss {float(net.blobs['loss'].data[0]):.5f}")
    print("learned weights:", net.params["fc"][0].data.round(3))
    # the label needs no gradient, so Caffe passed propagate_down = [True, False]
    assert not net.blobs["y"].diff.any()
    assert float(net.blobs["loss"].data[0]) < 1e-3


if __name__ == "__main__":
    main()
