"""A loss with a label bottom, and what ``propagate_down`` tells the layer.

The net decides, for every bottom, whether anyone needs its gradient: the scores come from
a learnable layer (yes), the labels come from data (no). ``propagate_down[i]`` carries that
decision, so the layer skips work nobody will use. Run: python docs/examples/label_loss.py
"""

import numpy as np
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2


class HingeLoss(caffe.Layer):
    """Multi-class hinge: loss = sum_i sum_{j != y_i} max(0, 1 + s_ij - s_iy) / N."""

    exact_num_bottom_blobs = 2

    def reshape(self, bottom, top):
        top[0].reshape(1)

    def forward(self, bottom, top):
        s = bottom[0].data
        y = bottom[1].data.astype(int).ravel()
        n = len(y)
        margins = np.maximum(0, 1 + s - s[np.arange(n), y][:, None])
        margins[np.arange(n), y] = 0
        self.active = (margins > 0).astype(np.float32)
        top[0].data[...] = margins.sum() / n

    def backward(self, top, propagate_down, bottom):
        # Labels have no gradient: bottom[1] is left alone even if propagate_down[1] is True
        # (force_backward: true sets every entry of a Python layer, which Caffe cannot tell
        # from a loss; raising here would break such nets)
        if propagate_down[0]:
            y = bottom[1].data.astype(int).ravel()
            n = len(y)
            grad = self.active.copy()
            grad[np.arange(n), y] = -self.active.sum(axis=1)
            bottom[0].diff[...] = grad / n * top[0].diff[0]


NET = """
layer { name: "input" type: "Input" top: "x" top: "label"
        input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
layer { name: "score" type: "InnerProduct" bottom: "x" top: "score"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "Python" bottom: "score" bottom: "label" top: "loss" loss_weight: 1
        python_param { module: "__main__" layer: "HingeLoss" } }
"""


def main():
    caffe.set_random_seed(1)
    net = caffe.Net(text_format.Parse(NET, caffe_pb2.NetParameter()), caffe.TRAIN)
    print("propagate_down for the loss layer:", net.bottom_need_backward[2])
    assert net.bottom_need_backward[2] == [True, False]
    net.blobs["x"].data[...] = np.random.default_rng(0).standard_normal((4, 5))
    net.blobs["label"].data[...] = [0, 1, 2, 1]
    net.forward()
    net.backward()
    assert net.blobs["score"].diff.any() and not net.blobs["label"].diff.any()
    print("loss:", float(net.blobs["loss"].data[0]))


if __name__ == "__main__":
    main()
