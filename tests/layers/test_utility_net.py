"""Utility layers inside a net: memory shared as in Caffe (Parameter, Reshape, Flatten), tops
whose shape changes at forward (Filter), and index bottoms that never get a diff."""

from __future__ import annotations

import numpy as np
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2


def _net(text: str) -> caffe.Net:
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TRAIN)


_PARAM_NET = """
force_backward: true
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 } } }
layer { name: "sum" type: "Eltwise" bottom: "p" bottom: "x" top: "y"
        eltwise_param { coeff: 2 coeff: 1 } }
%s
"""


def test_parameter_top_shares_data_and_diff_with_the_param():
    net = _net(_PARAM_NET % "")
    rng = np.random.default_rng(0)
    net.params["p"][0].data[...] = rng.standard_normal((2, 3))
    net.blobs["x"].data[...] = rng.standard_normal((2, 3))
    net.forward()
    np.testing.assert_array_equal(net.blobs["p"].data, net.params["p"][0].data)
    assert np.shares_memory(net.blobs["p"].data, net.params["p"][0].data)
    dy = rng.standard_normal((2, 3)).astype(np.float32)
    net.blobs["y"].diff[...] = dy
    net.backward()
    np.testing.assert_allclose(net.params["p"][0].diff, 2 * dy)
    np.testing.assert_array_equal(net.blobs["p"].diff, net.params["p"][0].diff)
    # the consumer overwrites the shared diff: a second backward does not accumulate (Caffe)
    net.backward()
    np.testing.assert_allclose(net.params["p"][0].diff, 2 * dy)


def test_parameter_used_twice_gets_the_summed_diff():
    net = _net(_PARAM_NET % 'layer { name: "sq" type: "Eltwise" bottom: "p" bottom: "y" '
                           'top: "z" eltwise_param { operation: PROD } }')
    rng = np.random.default_rng(1)
    p, x = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    net.params["p"][0].data[...] = p
    net.blobs["x"].data[...] = x
    net.forward()
    net.blobs["z"].diff[...] = 1.0
    net.backward()
    # z = p * (2 p + x): dz/dp = 4 p + x
    np.testing.assert_allclose(net.params["p"][0].diff, 4 * p + x, rtol=1e-5, atol=1e-6)


def test_reshape_and_flatten_tops_are_views_in_a_net():
    net = _net("""
        force_backward: true
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 } } }
        layer { name: "r" type: "Reshape" bottom: "x" top: "r"
                reshape_param { shape { dim: 0 dim: -1 } } }
        layer { name: "f" type: "Flatten" bottom: "r" top: "f" flatten_param { axis: 0 } }
    """)
    assert net.blobs["r"].data.shape == (2, 12)
    assert net.blobs["f"].data.shape == (24,)
    net.blobs["x"].data[...] = np.arange(24).reshape(2, 3, 4)
    net.forward()
    assert np.shares_memory(net.blobs["r"].data, net.blobs["x"].data)
    assert np.shares_memory(net.blobs["f"].data, net.blobs["x"].data)
    net.blobs["f"].diff[...] = np.arange(24)
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, np.arange(24).reshape(2, 3, 4))


_FILTER_NET = """
force_backward: true
layer { name: "in" type: "Input" top: "x" top: "sel" top: "idx"
        input_param { shape { dim: 4 dim: 2 } shape { dim: 4 } shape { dim: 3 } } }
layer { name: "f" type: "Filter" bottom: "x" bottom: "sel" top: "fx" }
layer { name: "r" type: "BatchReindex" bottom: "fx" bottom: "idx" top: "rx" }
"""


def test_filter_top_shape_changes_at_forward_and_index_bottoms_get_no_diff():
    net = _net(_FILTER_NET)
    assert net.blobs["fx"].data.shape == (4, 2)
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    net.blobs["x"].data[...] = x
    net.blobs["sel"].data[...] = [0, 1, 0, 1]
    net.blobs["idx"].data[...] = [1, 1, 0]
    net.forward()
    np.testing.assert_array_equal(net.blobs["fx"].data, x[[1, 3]])
    np.testing.assert_array_equal(net.blobs["rx"].data, x[[3, 3, 1]])
    net.blobs["rx"].diff[...] = [[1, 2], [3, 4], [5, 6]]
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, [[0, 0], [5, 6], [0, 0], [4, 6]])
    assert not net.blobs["sel"].diff.any()
    assert not net.blobs["idx"].diff.any()


def test_embed_with_force_backward_leaves_the_indices_alone():
    net = _net("""
        force_backward: true
        layer { name: "in" type: "Input" top: "i" input_param { shape { dim: 3 } } }
        layer { name: "e" type: "Embed" bottom: "i" top: "e"
                embed_param { input_dim: 4 num_output: 2 bias_term: false
                              weight_filler { type: "gaussian" } } }
    """)
    net.blobs["i"].data[...] = [3, 0, 3]
    net.forward()
    net.blobs["e"].diff[...] = [[1, 2], [3, 4], [5, 6]]
    net.backward()
    np.testing.assert_array_equal(net.params["e"][0].diff, [[3, 4], [0, 0], [0, 0], [6, 8]])
    assert not net.blobs["i"].diff.any()


def test_silence_in_a_net_without_force_backward():
    net = _net("""
        layer { name: "in" type: "Input" top: "a" input_param { shape { dim: 2 } } }
        layer { name: "s" type: "Silence" bottom: "a" }
    """)
    net.forward()
    net.backward()
    assert net.outputs == []
