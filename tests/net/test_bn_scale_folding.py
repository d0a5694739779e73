"""A BatchNorm with global statistics applies the in-place Scale after it within its own pass
(one pass over the blob, like PyTorch's affine batch norm) in whole, uninspected forwards; the
values are those of running both layers."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2

NET = """
%s
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "%s" }
layer { name: "scale" type: "Scale" bottom: "%s" top: "%s" scale_param { bias_term: %s } }
layer { name: "relu" type: "ReLU" bottom: "%s" top: "%s" }
"""


def _net(in_place: bool = True, bias: bool = True, force_backward: bool = False,
         phase=caffe.TEST) -> caffe.Net:
    top = "conv" if in_place else "bn"
    text = NET % ("force_backward: true" if force_backward else "", top, top, top,
                  str(bias).lower(), top, top)
    caffe.set_random_seed(7)  # the same conv weights in every net built here
    net = caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)
    rng = np.random.default_rng(3)
    mean, var, factor = net.params["bn"]
    mean.data[...] = rng.standard_normal(4) * 2
    var.data[...] = rng.uniform(0.5, 2, 4) * 2
    factor.data[...] = 2
    for p in net.params["scale"]:
        p.data[...] = rng.standard_normal(p.data.shape)
    net.blobs["data"].data[...] = rng.standard_normal((2, 3, 5, 5))
    return net


def _reference(net: caffe.Net) -> np.ndarray:
    net.before_forward(lambda li: None)  # a callback: every layer runs on its own
    net.forward()
    return net.blobs[net.outputs[0]].data.copy()


@pytest.mark.parametrize("in_place, bias", [(True, True), (True, False), (False, True)])
def test_folded_pair_gives_the_values_of_both_layers(in_place, bias):
    net = _net(in_place, bias)
    assert net.layer_dict["scale"].folded_at == list(net._layer_names).index("bn")
    net.forward()
    folded = net.blobs[net.outputs[0]].data.copy()
    np.testing.assert_allclose(folded, _reference(_net(in_place, bias)), rtol=1e-5, atol=1e-6)


def test_a_partial_forward_runs_the_layers_separately():
    net, ref = _net(), _net()
    expect = _reference(ref)
    net.forward(end="bn")
    net.forward(start="scale")
    np.testing.assert_allclose(net.blobs["conv"].data, expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"force_backward": True}, {"phase": caffe.TRAIN}])
def test_no_folding_where_a_backward_or_batch_statistics_are_needed(kwargs):
    net = _net(**kwargs)
    assert net.layer_dict["scale"].folded_at is None
