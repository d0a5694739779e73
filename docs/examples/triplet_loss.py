"""A three-bottom loss (anchor, positive, negative) that needs gradients for all three bottoms,
checked with the gradient checker. Run: python docs/examples/triplet_loss.py
"""

import numpy as np
import torch

import caffe
from caffe.proto import caffe_pb2
from caffe.testing import GradientChecker, make_blobs


class TripletLoss(caffe.Layer):
    """loss = sum_i max(0, |a_i - p_i|^2 - |a_i - n_i|^2 + margin) / N."""

    exact_num_bottom_blobs = 3
    margin = 0.5

    def reshape(self, bottom, top):
        top[0].reshape(1)

    def forward(self, bottom, top):
        a, p, n = (b.data for b in bottom)
        self.dp, self.dn = a - p, a - n
        per = (self.dp ** 2).sum(1) - (self.dn ** 2).sum(1) + self.margin
        self.active = (per > 0)[:, None]
        top[0].data[...] = np.maximum(per, 0).sum() / len(a)

    def backward(self, top, propagate_down, bottom):
        scale = 2 * top[0].diff[0] / len(self.dp) * self.active
        grads = (scale * (self.dp - self.dn), -scale * self.dp, scale * self.dn)
        for i in range(3):
            if propagate_down[i]:
                bottom[i].diff[...] = grads[i]


def main():
    layer = TripletLoss(caffe_pb2.LayerParameter(name="triplet", type="Python"))
    rng = np.random.default_rng(0)
    bottoms = make_blobs(*(rng.standard_normal((5, 4)) for _ in range(3)))
    GradientChecker(stepsize=1e-3, threshold=1e-3).check_gradient(
        layer, bottoms, [caffe.Blob(dtype=torch.float64)])
    print("TripletLoss: backward agrees with finite differences for all three bottoms")


if __name__ == "__main__":
    main()
