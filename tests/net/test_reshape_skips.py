"""The net skips a built-in layer's reshape while the shapes it depends on (bottoms, tops,
parameters) are unchanged, and runs it whenever one of them changed, for Filter (whose top
follows the selector's values) and for layers written outside neocaffe."""

from __future__ import annotations

import numpy as np
import pytest

import caffe
from caffe.errors import CaffeError

from nets import IP_FILLERS, euclid_net, make_net

NET = """
layer { name: "input" type: "Input" top: "data" top: "sel"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
        inner_product_param { num_output: 2 %s } }
layer { name: "relu" type: "ReLU" bottom: "fc" top: "fc" }
layer { name: "filter" type: "Filter" bottom: "fc" bottom: "sel" top: "kept" }
""" % IP_FILLERS


def _count_reshapes(net: caffe.Net) -> dict[str, int]:
    """Wrap every layer's reshape with a call counter (per layer name)."""
    calls = dict.fromkeys(net._layer_names, 0)
    for name, layer in zip(net._layer_names, net.layers):
        orig = layer.reshape

        def counted(bottom, top, _orig=orig, _name=name):
            calls[_name] += 1
            return _orig(bottom, top)
        layer.reshape = counted
    return calls


def _net() -> tuple[caffe.Net, dict[str, int]]:
    net = make_net(NET, caffe.TEST)
    net.blobs["data"].data[...] = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    net.blobs["sel"].data[...] = [1, 0, 1, 1]
    return net, _count_reshapes(net)


def test_unchanged_shapes_skip_the_reshape_after_the_first_forward():
    net, calls = _net()
    for _ in range(3):
        net.forward()
    assert calls["fc"] == 1 and calls["relu"] == 1
    assert calls["filter"] == 3  # its top shape follows the selector's values


def test_a_new_input_shape_reshapes_the_layers_again():
    net, calls = _net()
    net.forward()
    net.blobs["data"].reshape(2, 3)
    net.blobs["sel"].reshape(2)
    net.blobs["data"].data[...] = 1.0
    net.blobs["sel"].data[...] = [0, 1]
    out = net.forward()
    assert calls["fc"] == 2 and calls["relu"] == 2
    assert net.blobs["fc"].shape == (2, 2) and out["kept"].shape == (1, 2)


def test_a_top_reshaped_by_hand_is_reshaped_back():
    net, calls = _net()
    net.forward()
    net.blobs["fc"].reshape(7, 2)
    net.forward()
    assert calls["fc"] == 2
    assert net.blobs["fc"].shape == (4, 2)


def test_a_reshaped_parameter_reaches_the_layer_check():
    net, calls = _net()
    net.forward()
    net.params["fc"][0].reshape(2, 5)  # net surgery gone wrong: the reshape must object
    with pytest.raises(CaffeError, match="fc"):
        net.forward()
    assert calls["fc"] == 2


def test_net_reshape_runs_every_reshape():
    net, calls = _net()
    net.forward()
    net.reshape()
    assert all(n == 2 for n in calls.values())
    net.forward()
    assert calls["fc"] == 2


def test_skipping_gives_the_same_outputs():
    net, _ = _net()
    first = {k: v.copy() for k, v in net.forward().items()}
    again = net.forward()
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])


def test_python_layers_are_reshaped_before_every_forward(python_layer_module):
    net = make_net(euclid_net(python_layer_module))
    calls = _count_reshapes(net)
    for _ in range(3):
        net.forward()
    assert calls["loss"] == 3 and calls["fc"] == 1


FCN = """
layer { name: "input" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 2 dim: 9 dim: 9 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "pool" top: "up"
        convolution_param { num_output: 3 kernel_size: 4 stride: 2
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "data" top: "crop"
        crop_param { axis: 2 offset: 1 } }
layer { name: "prob" type: "Softmax" bottom: "crop" top: "prob" }
"""


def test_inputs_of_changing_size_give_what_a_fresh_net_gives():
    """A fully convolutional net fed images of alternating sizes (the skipped reshapes must
    run again whenever a size changes)."""
    caffe.set_random_seed(4)
    net = make_net(FCN, caffe.TEST)
    rng = np.random.default_rng(1)
    for size in (9, 13, 9, 9, 11):
        x = rng.standard_normal((1, 2, size, size)).astype(np.float32)
        net.blobs["data"].reshape(1, 2, size, size)
        net.blobs["data"].data[...] = x
        got = net.forward()["prob"].copy()
        caffe.set_random_seed(4)
        fresh = make_net(FCN.replace("dim: 9 dim: 9", f"dim: {size} dim: {size}"), caffe.TEST)
        fresh.blobs["data"].data[...] = x
        np.testing.assert_allclose(got, fresh.forward()["prob"], rtol=1e-6, atol=1e-7)
        assert got.shape == (1, 3, size, size)
