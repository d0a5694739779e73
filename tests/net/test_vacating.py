"""On the CPU the net lets go of a blob's memory just before a built-in layer replaces it (its
tops before forward, the diffs of the bottoms it propagates to before backward), so that the
allocator hands the layer the same memory back (``Layer.replaces_tops``,
``replaces_bottom_diffs``, ``caffe.net.vacated``)."""

from __future__ import annotations

import numpy as np

import caffe
import caffe.blob
from caffe._layers.vision.convolution import Convolution
from caffe.net import vacated
from tests.net.nets import make_net

NET = """
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 1 dim: 6 dim: 6 } } }
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 2 dim: 2 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
"""


def _net() -> caffe.Net:
    caffe.set_random_seed(1)  # the same weights in every net built here
    net = make_net(NET)
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal((2, 1, 6, 6))
    net.blobs["target"].data[...] = rng.standard_normal((2, 2))
    return net


def _names(net: caffe.Net, blobs) -> list[str]:
    return [name for name, b in net.blobs.items() if any(b is x for x in blobs)]


def test_the_plan_skips_in_place_tops_data_layers_and_unpropagated_bottoms():
    net = _net()
    index = {name: i for i, name in enumerate(net._layer_names)}
    assert _names(net, net._vacate_tops[index["conv"]]) == ["conv"]
    assert _names(net, net._vacate_tops[index["relu"]]) == []  # in place
    assert _names(net, net._vacate_tops[index["data"]]) == []  # no bottoms: fills its tops
    assert _names(net, net._vacate_diffs[index["ip"]]) == ["pool"]
    assert _names(net, net._vacate_diffs[index["conv"]]) == []  # data needs no diff
    assert _names(net, net._vacate_diffs[index["relu"]]) == []  # in place
    assert _names(net, net._vacate_diffs[index["loss"]]) == []  # not declared


def test_passes_give_the_values_of_passes_that_keep_every_buffer(monkeypatch):
    monkeypatch.setattr(caffe.blob, "VACATE_MIN_BYTES", 0)  # these blobs are tiny
    net, ref = _net(), _net()
    ref._vacate_tops = ref._vacate_diffs = ref._vacate_none  # every buffer kept
    for n in (net, ref):
        n.forward()
        n.backward()
        n.forward()
        n.backward()
    for name in net.blobs:
        np.testing.assert_array_equal(net.blobs[name].data, ref.blobs[name].data)
        np.testing.assert_array_equal(net.blobs[name].diff, ref.blobs[name].diff)


def test_only_large_blobs_without_live_views_are_let_go_of(monkeypatch):
    blob = caffe.Blob(4, 4)
    blob.diff_tensor.fill_(1)
    kept, kept_diff = blob.tensor, blob.diff_tensor
    blob.vacate()
    blob.vacate_diff()
    assert blob.tensor is kept and blob.diff_tensor is kept_diff  # small: not worth it
    monkeypatch.setattr(caffe.blob, "VACATE_MIN_BYTES", 64)
    view = blob.data
    blob.vacate()
    assert blob.tensor is kept  # a NumPy view shows this memory
    del view
    blob.vacate()
    blob.vacate_diff()
    assert blob.tensor is not kept and blob.shape == (4, 4)
    assert not blob.has_diff


def test_classes_written_elsewhere_are_never_vacated():
    class MyConv(Convolution):  # defined in a test module, not in caffe
        pass

    assert Convolution.vacates() == (True, True)
    assert MyConv.vacates() == (False, False)


def test_vacated_lists_only_what_the_layer_replaces():
    net = _net()
    conv = net.layer_dict["conv"]
    data, out = net.blobs["data"], net.blobs["conv"]
    assert vacated(conv, [data], [out], [True]) == ((out,), (data,))
    assert vacated(conv, [data], [out], [False]) == ((out,), ())
    assert vacated(conv, [out], [out], [True]) == ((), ())


def test_a_failing_layer_leaves_its_let_go_tops_usable(monkeypatch):
    monkeypatch.setattr(caffe.blob, "VACATE_MIN_BYTES", 0)
    net = _net()
    net.forward()
    conv = net.layer_dict["conv"]

    def fail(bottom, top):
        raise RuntimeError("boom")

    monkeypatch.setattr(conv, "forward", fail)
    try:
        net.forward()
    except caffe.errors.CaffeError as e:
        assert "boom" in str(e)
    else:
        raise AssertionError("the failing forward did not raise")
    top = net.blobs["conv"]
    assert not top.data.any()
    top.data[...] = np.arange(top.count).reshape(top.shape)
    np.testing.assert_array_equal(top.data.ravel(), np.arange(top.count))
