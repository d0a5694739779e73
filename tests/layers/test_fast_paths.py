"""The fused / view-based fast paths of the layers tuned for speed give Caffe's numbers in
the corners the layer rows do not reach: non-finite diffs through ReLU, ELU with a negative
alpha, Swish with beta 0, softmaxes over an axis followed by 1s, ArgMax ties, diffs shared
with the top (Eltwise SUM, Bias, Concat), in-place DummyData refills and ``fillers.fill_``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe._layers.loss.labels import labels_checked_on
from caffe._layers.vision.im2col import im2col
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.fillers import fill, fill_, make_filled
from caffe.layer import Phase
from caffe.net import create_layer
from caffe.proto import caffe_pb2

FP = caffe_pb2.FillerParameter


def _layer(type_: str, param: str, bottoms: list[np.ndarray], n_top: int = 1,
           in_place: bool = False):
    """A set-up layer on float64 blobs holding ``bottoms``; returns (layer, bottom, top)."""
    lp = caffe_pb2.LayerParameter(name="l", type=type_)
    text_format.Merge(param, lp)
    lp.bottom.extend(f"b{i}" for i in range(len(bottoms)))
    lp.top.extend(["b0"] if in_place else [f"t{i}" for i in range(n_top)])
    layer = create_layer(lp, Phase.TRAIN)
    bottom = []
    for a in bottoms:
        b = Blob(*a.shape)
        b.tensor = torch.from_numpy(np.asarray(a, dtype=np.float64).copy())
        bottom.append(b)
    top = bottom[:1] if in_place else [Blob() for _ in range(n_top)]
    layer.SetUp(bottom, top)
    return layer, bottom, top


def _run(layer, bottom, top, dy: np.ndarray | None = None, down: list[bool] | None = None):
    layer.Reshape(bottom, top)
    layer.Forward(bottom, top)
    if dy is not None:
        top[0].diff_tensor = torch.from_numpy(np.asarray(dy, dtype=np.float64))
        layer.Backward(top, down or [True] * len(bottom), bottom)


def test_relu_turns_an_infinite_diff_into_nan_where_the_unit_is_off():
    # Caffe multiplies dy by the 0/1 (or slope) factor: inf * 0 is NaN
    for slope in (0.0, 0.1):
        layer, bottom, top = _layer("ReLU", f"relu_param {{ negative_slope: {slope} }}",
                                    [np.array([1.0, -1.0, 2.0])])
        _run(layer, bottom, top, np.array([np.inf, np.inf, -1.0]))
        dx = bottom[0].diff
        assert dx[0] == np.inf and np.isnan(dx[1]) == (slope == 0) and dx[2] == -1.0


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("alpha", [1.5, 0.0, -0.5])
def test_elu_gradient_reads_the_bottom_data_as_caffe(alpha, in_place):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    dy = rng.standard_normal((3, 4))
    layer, bottom, top = _layer("ELU", f"elu_param {{ alpha: {alpha} }}", [x], in_place=in_place)
    _run(layer, bottom, top, dy)
    y = np.where(x > 0, x, alpha * np.expm1(x))
    seen = y if in_place else x  # in place, the bottom data holds the output
    np.testing.assert_allclose(top[0].data, y, rtol=1e-12)
    np.testing.assert_allclose(bottom[0].diff, np.where(seen > 0, dy, dy * (y + alpha)),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.0, -1.5])
def test_swish_forward_and_backward(beta, in_place):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5)) * 2
    dy = rng.standard_normal((2, 5))
    layer, bottom, top = _layer("Swish", f"swish_param {{ beta: {beta} }}", [x],
                                in_place=in_place)
    _run(layer, bottom, top, dy)
    s = 1 / (1 + np.exp(-beta * x))
    y = x * s
    np.testing.assert_allclose(top[0].data, y, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(bottom[0].diff, dy * (beta * y + s * (1 - beta * y)),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape, axis", [((3, 5, 1, 1), 1), ((2, 3, 4, 1), 2), ((4, 6), 1)])
def test_softmax_over_an_axis_followed_by_ones(shape, axis):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    layer, bottom, top = _layer("Softmax", f"softmax_param {{ axis: {axis} }}", [x])
    _run(layer, bottom, top, dy)
    e = np.exp(x - x.max(axis, keepdims=True))
    y = e / e.sum(axis, keepdims=True)
    np.testing.assert_allclose(top[0].data, y, rtol=1e-12)
    dx = y * (dy - (dy * y).sum(axis, keepdims=True))
    np.testing.assert_allclose(bottom[0].diff, dx, rtol=1e-10, atol=1e-14)


def test_softmax_loss_with_every_label_ignored_is_zero():
    x = np.random.default_rng(3).standard_normal((4, 3))
    layer, bottom, top = _layer("SoftmaxWithLoss", "loss_param { ignore_label: 1 }",
                                [x, np.ones(4)])
    _run(layer, bottom, top, np.array(1.0), [True, False])
    assert float(top[0].data) == 0.0
    np.testing.assert_array_equal(bottom[0].diff, 0.0)


def test_label_check_runs_on_the_cpu_and_elsewhere_only_on_request(monkeypatch):
    monkeypatch.delenv("CAFFE_CHECK_LABELS", raising=False)
    assert labels_checked_on(torch.device("cpu"))
    assert not labels_checked_on(torch.device("cuda"))
    monkeypatch.setenv("CAFFE_CHECK_LABELS", "1")
    assert labels_checked_on(torch.device("cuda"))
    layer, bottom, top = _layer("SoftmaxWithLoss", "", [np.zeros((2, 3)), np.array([0.0, 3.0])])
    with pytest.raises(LayerSetupError, match="label 3 is out of range"):
        _run(layer, bottom, top)


@pytest.mark.parametrize("labels, bad", [([0.0, 255.0, 2.0], None), ([0.0, 255.0, 4.0], 4),
                                         ([-1.0, 2.0, 2.0], -1)])
def test_label_range_check_with_an_ignore_label_outside_the_classes(labels, bad):
    layer, bottom, top = _layer("SoftmaxWithLoss", "loss_param { ignore_label: 255 }",
                                [np.zeros((3, 3)), np.array(labels)])
    if bad is None:
        _run(layer, bottom, top)
        np.testing.assert_allclose(top[0].data, np.log(3.0), rtol=1e-6)
    else:
        with pytest.raises(LayerSetupError, match=f"label {bad} is out of range"):
            _run(layer, bottom, top)


@pytest.mark.parametrize("param, expected", [
    ("", [[[4.0]], [[0.0]]]),
    ("out_max_val: true", [[[4.0], [3.0]], [[0.0], [2.0]]]),
    ("axis: 1", [[4.0], [0.0]]),
])
def test_argmax_top1_ties_go_to_the_larger_index(param, expected):
    x = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 1.0, 1.0, 1.0, 1.0]])
    layer, bottom, top = _layer("ArgMax", f"argmax_param {{ {param} }}", [x])
    _run(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, expected)


_SUM_NET = """
force_backward: true
layer { name: "in" type: "Input" top: "x" top: "z" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "a" type: "TanH" bottom: "x" top: "a" }
layer { name: "b" type: "Sigmoid" bottom: "x" top: "b" }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" bottom: "z" top: "y"
        eltwise_param { coeff: 1 coeff: 1 coeff: -2 } }
layer { name: "relu" type: "ReLU" bottom: "y" top: "y" }
"""


def test_eltwise_sum_shares_dy_and_the_net_gradient_stays_right():
    net = caffe.Net(text_format.Parse(_SUM_NET, caffe_pb2.NetParameter()), caffe.TRAIN)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3))
    z = rng.standard_normal((2, 3)) * 0.1
    net.blobs["x"].data[...] = x
    net.blobs["z"].data[...] = z
    net.forward()
    y = np.tanh(x) + 1 / (1 + np.exp(-x)) - 2 * z
    np.testing.assert_allclose(net.blobs["y"].data, np.maximum(y, 0), rtol=1e-5, atol=1e-6)
    dy = rng.standard_normal((2, 3))
    for _ in range(2):  # the shared diffs are replaced, not accumulated, on a second pass
        net.blobs["y"].diff[...] = dy
        net.backward()
        g = dy * (y > 0)
        s = 1 / (1 + np.exp(-x))
        np.testing.assert_allclose(net.blobs["x"].diff, g * (1 - np.tanh(x) ** 2 + s * (1 - s)),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(net.blobs["z"].diff, -2 * g, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("axis, shape", [(0, (2, 3, 4)), (1, (1, 3, 4)), (1, (2, 3, 4))])
def test_concat_hands_slices_as_views(axis, shape):
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    layer, bottom, top = _layer("Concat", f"concat_param {{ axis: {axis} }}", [a, b])
    dy = rng.standard_normal(top[0].shape)
    _run(layer, bottom, top, dy)
    for i, blob in enumerate(bottom):
        g = blob.diff_tensor
        assert g.untyped_storage().data_ptr() == top[0].diff_tensor.untyped_storage().data_ptr()
        # NumPy access gives the bottom its own memory: writes must not reach the top's diff
        np.testing.assert_array_equal(blob.diff, np.split(dy, 2, axis)[i])
        assert not np.shares_memory(blob.diff, top[0].diff)
        blob.reshape(a.size)  # the diff can be viewed in another shape of its count
        assert blob.diff.shape == (a.size,)


def test_bias_hands_dy_itself_to_the_bottom():
    rng = np.random.default_rng(6)
    layer, bottom, top = _layer("Bias", "", [rng.standard_normal((2, 3, 2)),
                                             rng.standard_normal(3)])
    dy = rng.standard_normal((2, 3, 2))
    _run(layer, bottom, top, dy)
    assert bottom[0].diff_tensor is top[0].diff_tensor
    np.testing.assert_allclose(bottom[1].diff, dy.sum((0, 2)))


@pytest.mark.parametrize("param", [
    "kernel_size: 3 pad: 1",
    "kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 0 pad_w: 2 dilation: 2",
])
def test_im2col_2d_matches_the_generic_columns(param):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 6, 7))
    layer, bottom, top = _layer("Im2col", f"convolution_param {{ {param} }}", [x])
    dy = rng.standard_normal(top[0].shape)
    _run(layer, bottom, top, dy)
    leaf = torch.from_numpy(x).requires_grad_()
    cols = im2col(leaf, layer.geo)
    np.testing.assert_array_equal(top[0].data, cols.detach().numpy())
    (dx,) = torch.autograd.grad(cols, leaf, torch.from_numpy(dy))
    np.testing.assert_allclose(bottom[0].diff, dx.numpy(), rtol=1e-12, atol=1e-12)


def test_dummy_data_refills_in_place_with_fills_numbers():
    lp = text_format.Parse(
        'name: "d" type: "DummyData" top: "t" dummy_data_param { shape { dim: 3 dim: 4 } '
        'data_filler { type: "gaussian" std: 2 } }', caffe_pb2.LayerParameter())
    layer = create_layer(lp, Phase.TRAIN)
    top = [Blob()]
    layer.SetUp([], top)
    before = top[0].tensor
    caffe.set_random_seed(9)
    layer.Forward([], top)
    assert top[0].tensor is before
    caffe.set_random_seed(9)
    expected = Blob(3, 4)
    fill(expected, lp.dummy_data_param.data_filler[0])
    np.testing.assert_array_equal(top[0].data, expected.data)


def test_dummy_data_setup_fills_only_constant_tops_and_takes_legacy_counts_per_field():
    # Caffe's LayerSetUp fills the constant tops; the others are zeros until the first forward.
    # Each legacy list has one value or one per top, independently of the others.
    lp = text_format.Parse(
        'name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { num: 2 channels: 3 '
        'channels: 4 height: 1 width: 5 width: 6 data_filler { type: "constant" value: 7 } '
        'data_filler { type: "uniform" min: 1 max: 2 } }', caffe_pb2.LayerParameter())
    layer = create_layer(lp, Phase.TRAIN)
    top = [Blob(), Blob()]
    layer.SetUp([], top)
    assert top[0].shape == (2, 3, 1, 5) and top[1].shape == (2, 4, 1, 6)
    assert set(top[0].data.ravel()) == {7.0} and set(top[1].data.ravel()) == {0.0}
    layer.Forward([], top)
    assert top[1].data.min() >= 1 and set(top[0].data.ravel()) == {7.0}


@pytest.mark.parametrize("kw", [dict(type="gaussian", std=2.0, sparse=2),
                                dict(type="uniform", min=-1, max=2), dict(type="xavier"),
                                dict(type="positive_unitball")])
def test_fill_in_place_draws_make_filleds_numbers_on_the_cpu(kw):
    shape = (4, 3, 2, 5)
    caffe.set_random_seed(11)
    expected = make_filled(FP(**kw), shape)
    for t in (torch.empty(shape), torch.empty(shape, dtype=torch.float64),
              torch.empty(shape[::-1]).permute(3, 2, 1, 0)):
        caffe.set_random_seed(11)
        assert fill_(t, FP(**kw)) is t
        np.testing.assert_array_equal(t.float().numpy(), expected.numpy())
