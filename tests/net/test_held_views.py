"""NumPy views of blobs stay live across passes, as pycaffe's do (Caffe's blobs keep their
memory): a view taken before a forward (or backward) shows the values of the next one, even
though layers here hand over new tensors."""

from __future__ import annotations

import numpy as np
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2

NET = """
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def _net() -> caffe.Net:
    return caffe.Net(text_format.Parse(NET, caffe_pb2.NetParameter()), caffe.TEST)


def test_a_held_output_view_shows_the_next_forward():
    net = _net()
    rng = np.random.default_rng(0)
    held = net.forward(data=rng.standard_normal((2, 3)))["prob"]
    ip_view = net.blobs["ip"].data
    second = net.forward(data=rng.standard_normal((2, 3)))["prob"].copy()
    np.testing.assert_array_equal(held, second)
    np.testing.assert_array_equal(ip_view, net.blobs["ip"].data)


def test_a_held_diff_view_shows_the_next_backward():
    net = _net()
    rng = np.random.default_rng(1)
    net.forward(data=rng.standard_normal((2, 3)))
    held = net.backward(prob=rng.standard_normal((2, 4)))["data"]
    net.backward(prob=rng.standard_normal((2, 4)))
    np.testing.assert_array_equal(held, net.blobs["data"].diff)


def test_without_a_held_view_the_new_tensor_is_taken_as_is():
    net = _net()
    net.forward(data=np.ones((2, 3)))
    blob = net.blobs["prob"]
    before = blob.tensor
    net.forward(data=np.zeros((2, 3)))
    assert blob.tensor is not before  # no copy into the old memory when nobody shows it


BN_NET = """
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "x"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" }
layer { name: "scale" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }
layer { name: "loss" type: "Reduction" bottom: "x" top: "loss"
  reduction_param { operation: SUMSQ } loss_weight: 1 }
"""


def test_a_held_view_does_not_disturb_layers_that_keep_their_input():
    """In-place BatchNorm and Scale keep their input's memory for the backward; a NumPy view
    of that blob must not make the net copy outputs into it."""
    grads = []
    for hold in (False, True):
        caffe.set_random_seed(4)
        net = caffe.Net(text_format.Parse(BN_NET, caffe_pb2.NetParameter()), caffe.TRAIN)
        net.blobs["data"].data[...] = np.random.default_rng(2).standard_normal((4, 3))
        view = net.blobs["x"].data if hold else None
        net.forward()
        net.backward()
        grads.append(net.blobs["data"].diff.copy())
        del view
    np.testing.assert_array_equal(grads[0], grads[1])


FLAT_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "flat" type: "Flatten" bottom: "ip" top: "flat" }
"""


def test_a_held_view_of_a_flattened_blob_follows_new_inputs():
    """Flatten's top shares its bottom's memory; a view of it keeps showing the new values."""
    net = caffe.Net(text_format.Parse(FLAT_NET, caffe_pb2.NetParameter()), caffe.TEST)
    rng = np.random.default_rng(4)
    held = net.forward(data=rng.standard_normal((2, 3)))["flat"]
    for _ in range(2):
        net.forward(data=rng.standard_normal((2, 3)))
        np.testing.assert_array_equal(held, net.blobs["ip"].data)
