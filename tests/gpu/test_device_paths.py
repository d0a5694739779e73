"""Code paths taken only on a GPU give what the CPU gives: the one-pass in-place affine of
BatchNorm (global statistics, with the Scale after it folded in) and of an in-place Scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

BN_SCALE = """
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 4 dim: 3 dim: 5 dim: 5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data"
  batch_norm_param { use_global_stats: true } }
layer { name: "scale" type: "Scale" bottom: "data" top: "data"
  scale_param { bias_term: true } }
layer { name: "scale2" type: "Scale" bottom: "data" top: "data"
  scale_param { bias_term: true } }
"""


def _run(mode: str) -> np.ndarray:
    getattr(caffe, f"set_mode_{mode}")()
    net = caffe.Net(text_format.Parse(BN_SCALE, caffe_pb2.NetParameter()), caffe.TEST)
    rng = np.random.default_rng(5)
    for name, values in (("bn", [rng.standard_normal(3), rng.random(3) + 0.5, [2.0]]),
                         ("scale", [rng.standard_normal(3), rng.standard_normal(3)]),
                         ("scale2", [rng.standard_normal(3), rng.standard_normal(3)])):
        for blob, v in zip(net.params[name], values):
            blob.data[...] = v
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    return net.forward(data=x)["data"].copy()


@cuda
def test_in_place_batchnorm_and_scale_match_the_cpu():
    try:
        np.testing.assert_allclose(_run("gpu"), _run("cpu"), rtol=1e-5, atol=1e-6)
    finally:
        caffe.set_mode_cpu()
