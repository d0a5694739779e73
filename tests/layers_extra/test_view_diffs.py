"""Which utility layers hand out views instead of copies, and why that stays correct: Concat's
bottom diffs are views of its top diff (along any axis), Slice copies its tops unless the net
allows views (``tops_are_views``), and Reduction's bottom diff is dense (never a stride-0
expand, whose NumPy writes would collapse onto one element per reduced row)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe.blob import Blob
from caffe.net import create_layer
from caffe.proto import caffe_pb2

DOUBLE = textwrap.dedent('''
    import caffe


    class Double(caffe.Layer):
        """y = 2 x, in place, written through NumPy as users do."""

        def reshape(self, bottom, top):
            pass

        def forward(self, bottom, top):
            top[0].data[...] = 2 * bottom[0].data

        def backward(self, top, propagate_down, bottom):
            bottom[0].diff[...] = 2 * top[0].diff
''')


def _layer(type_name: str, param: str, n_bottom: int, n_top: int):
    lp = caffe_pb2.LayerParameter(name="l", type=type_name)
    text_format.Merge(param, lp)
    lp.bottom.extend(f"b{i}" for i in range(n_bottom))
    lp.top.extend(f"t{i}" for i in range(n_top))
    return create_layer(lp, caffe.TRAIN)


def _blobs(*arrays: np.ndarray) -> list[Blob]:
    out = []
    for a in arrays:
        b = Blob(*a.shape)
        b.data[...] = a
        out.append(b)
    return out


def _net(text: str) -> caffe.Net:
    param = caffe_pb2.NetParameter()
    text_format.Merge(text, param)
    return caffe.Net(param, caffe.TRAIN)


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_concat_bottom_diffs_are_views_of_the_top_diff(axis: int) -> None:
    rng = np.random.default_rng(0)
    shapes = [[2, 3, 4], [2, 3, 4]]
    shapes[1][axis] = 2
    bottom = _blobs(*(rng.standard_normal(s) for s in shapes))
    top = [Blob()]
    layer = _layer("Concat", f"concat_param {{ axis: {axis} }}", 2, 1)
    layer.SetUp(bottom, top)
    layer.Forward(bottom, top)
    dy = rng.standard_normal(top[0].shape).astype(np.float32)
    top[0].diff[...] = dy
    layer.Backward(top, [True, True], bottom)
    first = shapes[0][axis]
    parts = np.split(dy, [first], axis=axis)
    for b, part in zip(bottom, parts):
        assert _storage(b.diff_tensor) == _storage(top[0].diff_tensor)
        np.testing.assert_array_equal(b.diff, part)  # NumPy access gets private memory
        b.reshape(b.count)  # a strided diff survives a reshape (as a copy)
        np.testing.assert_array_equal(b.diff, part.reshape(-1))


CONCAT_NET = """
force_backward: true
layer { name: "in" type: "Input" top: "x" top: "y"
        input_param { shape { dim: 2 dim: 3 dim: 4 } shape { dim: 2 dim: 2 dim: 4 } } }
layer { name: "double" type: "Python" bottom: "x" top: "x"
        python_param { module: "%s" layer: "Double" } }
layer { name: "cat" type: "Concat" bottom: "x" bottom: "y" top: "c" }
"""


@pytest.fixture
def double_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "view_diff_double.py").write_text(DOUBLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "view_diff_double"


def test_concat_views_give_right_gradients_below_an_in_place_python_layer(
        double_module: str) -> None:
    net = _net(CONCAT_NET % double_module)
    rng = np.random.default_rng(1)
    net.blobs["x"].data[...] = rng.standard_normal((2, 3, 4))
    net.blobs["y"].data[...] = rng.standard_normal((2, 2, 4))
    net.forward()
    g = rng.standard_normal((2, 5, 4)).astype(np.float32)
    diffs = net.backward(c=g)
    np.testing.assert_allclose(diffs["x"], 2 * g[:, :3], rtol=1e-6)
    np.testing.assert_allclose(diffs["y"], g[:, 3:], rtol=1e-6)


def test_concat_top_diff_survives_an_in_place_python_layer_below(double_module: str) -> None:
    net = _net(CONCAT_NET % double_module)
    net.forward()
    g = np.ones((2, 5, 4), np.float32)
    net.backward(diffs=["c"], c=g)
    np.testing.assert_array_equal(net.blobs["c"].diff, g)


SLICE_NET = """
force_backward: true
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 dim: 3 } } }
layer { name: "tanh" type: "TanH" bottom: "x" top: "s" }
layer { name: "slice" type: "Slice" bottom: "s" top: "a" top: "b"
        slice_param { axis: 1 slice_point: 1 } }
layer { name: "relu" type: "ReLU" bottom: "a" top: "a" relu_param { negative_slope: 0.5 } }
"""


def test_slice_tops_are_copies_so_an_in_place_consumer_keeps_the_bottom() -> None:
    net = _net(SLICE_NET)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    s = np.tanh(x)
    slope = np.where(s[:, :1] > 0, 1.0, 0.5)
    np.testing.assert_allclose(net.blobs["s"].data, s, rtol=1e-6)  # untouched by the ReLU
    np.testing.assert_allclose(net.blobs["a"].data, slope * s[:, :1], rtol=1e-6)
    ga = rng.standard_normal((2, 1, 3)).astype(np.float32)
    gb = rng.standard_normal((2, 3, 3)).astype(np.float32)
    dx = net.backward(a=ga, b=gb)["x"]
    ds = np.concatenate([slope * ga, gb], axis=1)
    np.testing.assert_allclose(dx, ds * (1 - s * s), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("views", [False, True])
def test_slice_views_only_when_allowed(views: bool) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 3))
    bottom, top = _blobs(x), [Blob(), Blob()]
    layer = _layer("Slice", "slice_param { axis: 1 slice_point: 2 }", 1, 2)
    layer.tops_are_views = views
    layer.SetUp(bottom, top)
    layer.Forward(bottom, top)
    for t, part in zip(top, np.split(x, [2], axis=1)):
        np.testing.assert_allclose(t.data, part, rtol=1e-6)
        assert (_storage(t.tensor) == _storage(bottom[0].tensor)) == views
    g = [rng.standard_normal(t.shape) for t in top]
    for t, gi in zip(top, g):
        t.diff[...] = gi
    layer.Backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, np.concatenate(g, axis=1), rtol=1e-6)


@pytest.mark.parametrize("op", ["SUM", "MEAN"])
def test_reduction_bottom_diff_is_dense_and_writable(op: str) -> None:
    bottom, top = _blobs(np.ones((2, 3, 4))), [Blob()]
    layer = _layer("Reduction", f"reduction_param {{ operation: {op} axis: 1 }}", 1, 1)
    layer.SetUp(bottom, top)
    layer.Forward(bottom, top)
    top[0].diff[...] = [1.0, 2.0]
    layer.Backward(top, [True], bottom)
    d = bottom[0].diff_tensor
    assert d.is_contiguous() and 0 not in d.stride()
    scale = 1.0 if op == "SUM" else 1 / 12
    np.testing.assert_allclose(bottom[0].diff[1], np.full((3, 4), 2 * scale), rtol=1e-6)
    written = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    bottom[0].diff[...] = written
    np.testing.assert_array_equal(bottom[0].diff, written)
