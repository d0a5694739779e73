"""Bias, Scale and PReLU details beyond the layer table: scalar second bottoms, Caffe's
accumulate-or-overwrite rules for parameter diffs, the scratch product Scale leaves in an
unpropagated bottom diff, pre-loaded blobs, and parameter errors of the neuron family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.layer import Phase
from caffe.net import create_layer
from caffe.proto import caffe_pb2

X_SHAPE = (2, 3, 4)


def _layer(type_: str, param: str = "", n_bottom: int = 1):
    lp = caffe_pb2.LayerParameter(name="l", type=type_)
    text_format.Merge(param, lp)
    lp.bottom.extend(f"b{i}" for i in range(n_bottom))
    lp.top.append("t")
    return create_layer(lp, Phase.TRAIN)


def _blob(a: np.ndarray) -> Blob:
    b = Blob(*a.shape)
    b.tensor.copy_(torch.as_tensor(np.asarray(a, np.float32)))
    return b


def _setup(layer, *arrays):
    bottom = [_blob(a) for a in arrays]
    top = Blob()
    layer.SetUp(bottom, [top])
    return bottom, top


def _fwd_bwd(layer, bottom, top, dy, propagate_down=None):
    layer.Forward(bottom, [top])
    top.diff[...] = dy
    layer.Backward([top], propagate_down or [True] * len(bottom), bottom)


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    return (rng.standard_normal(X_SHAPE).astype(np.float32),
            rng.standard_normal(X_SHAPE).astype(np.float32))


@pytest.mark.parametrize("type_", ["Bias", "Scale"])
def test_scalar_second_bottom(type_, data):
    x, dy = data
    s = np.array(1.7, np.float32)
    layer = _layer(type_, "", 2)
    bottom, top = _setup(layer, x, s)
    assert bottom[1].shape == ()
    _fwd_bwd(layer, bottom, top, dy)
    if type_ == "Bias":
        np.testing.assert_allclose(top.data, x + s, rtol=1e-6)
        np.testing.assert_allclose(bottom[0].diff, dy)
        np.testing.assert_allclose(bottom[1].diff, dy.sum(), rtol=1e-5)
    else:
        np.testing.assert_allclose(top.data, x * s, rtol=1e-6)
        np.testing.assert_allclose(bottom[0].diff, dy * s, rtol=1e-6)
        np.testing.assert_allclose(bottom[1].diff, (dy * x).sum(), rtol=1e-5)


def test_scale_two_bottoms_with_bias_term_learns_the_bias_as_blob_0(data):
    x, dy = data
    s = np.array([0.5, 1.0, 2.0], np.float32)
    layer = _layer("Scale", "scale_param { bias_term: true bias_filler { type: 'constant' "
                            "value: 0.25 } }", 2)
    bottom, top = _setup(layer, x, s)
    assert [b.shape for b in layer.blobs] == [(3,)]
    _fwd_bwd(layer, bottom, top, dy)
    np.testing.assert_allclose(top.data, x * s[:, None] + 0.25, rtol=1e-6)
    np.testing.assert_allclose(layer.blobs[0].diff, dy.sum((0, 2)), rtol=1e-5)
    np.testing.assert_allclose(bottom[1].diff, (dy * x).sum((0, 2)), rtol=1e-5)


@pytest.mark.parametrize("param,reduce_axes,accumulates", [
    ("", (0, 2), True),                                  # per channel: accumulates
    ("scale_param { num_axes: 0 }", None, True),         # scalar: accumulates
    ("scale_param { axis: 2 }", (0, 1), True),           # inner == 1: accumulates
    ("scale_param { axis: 0 num_axes: 2 }", (2,), False),  # outer == 1: Caffe overwrites
    ("scale_param { axis: 0 num_axes: -1 }", (), False),   # every element: Caffe overwrites
])
def test_scale_param_diff_accumulates_like_caffe(param, reduce_axes, accumulates, data):
    x, dy = data
    layer = _layer("Scale", param)
    bottom, top = _setup(layer, x)
    _fwd_bwd(layer, bottom, top, dy)
    _fwd_bwd(layer, bottom, top, dy)
    once = (dy * x).sum() if reduce_axes is None else (dy * x).sum(reduce_axes)
    expected = 2 * once if accumulates else once
    np.testing.assert_allclose(layer.blobs[0].diff, expected, rtol=1e-5, atol=1e-6)


def test_bias_and_prelu_param_diffs_accumulate(data):
    x, dy = data
    bias = _layer("Bias")
    bottom, top = _setup(bias, x)
    _fwd_bwd(bias, bottom, top, dy)
    _fwd_bwd(bias, bottom, top, dy)
    np.testing.assert_allclose(bias.blobs[0].diff, 2 * dy.sum((0, 2)), rtol=1e-5)

    prelu = _layer("PReLU")
    bottom, top = _setup(prelu, x)
    _fwd_bwd(prelu, bottom, top, dy)
    _fwd_bwd(prelu, bottom, top, dy)
    np.testing.assert_allclose(prelu.blobs[0].diff, 2 * (dy * np.minimum(x, 0)).sum((0, 2)),
                               rtol=1e-5)


def test_scale_without_bottom_propagation_leaves_caffes_scratch_product(data):
    x, dy = data
    layer = _layer("Scale", "scale_param { filler { type: 'constant' value: 3 } }")
    bottom, top = _setup(layer, x)
    _fwd_bwd(layer, bottom, top, dy, propagate_down=[False])
    np.testing.assert_allclose(bottom[0].diff, dy * x, rtol=1e-6)
    np.testing.assert_allclose(layer.blobs[0].diff, (dy * x).sum((0, 2)), rtol=1e-5)


def test_bias_without_bottom_propagation_leaves_the_bottom_diff(data):
    x, dy = data
    layer = _layer("Bias")
    bottom, top = _setup(layer, x)
    _fwd_bwd(layer, bottom, top, dy, propagate_down=[False])
    np.testing.assert_array_equal(bottom[0].diff, 0)


def test_preloaded_scale_blob_gets_a_new_bias():
    layer = _layer("Scale", "scale_param { bias_term: true }")
    layer.blobs.add_blob(3).data[...] = [1, 2, 3]
    _setup(layer, np.ones(X_SHAPE, np.float32))
    assert [b.shape for b in layer.blobs] == [(3,), (3,)]
    np.testing.assert_array_equal(layer.blobs[0].data, [1, 2, 3])
    np.testing.assert_array_equal(layer.blobs[1].data, 0)


@pytest.mark.parametrize("type_,param,arrays,match", [
    ("Bias", "", [X_SHAPE, (4,)], r"bias shape \(4,\) does not match"),
    ("Scale", "scale_param { axis: 2 }", [X_SHAPE, (3,)], r"scale shape \(3,\) does not match"),
    ("Scale", "scale_param { axis: 3 }", [X_SHAPE], "axis 3 is out of range"),
    ("Bias", "bias_param { num_axes: 3 }", [X_SHAPE], "extends past"),
    ("Scale", "scale_param { num_axes: -2 }", [X_SHAPE], "num_axes -2"),
    ("PReLU", "", [(5,)], "at least 2 axes"),
    ("Exp", "exp_param { base: -2 }", [X_SHAPE], "strictly positive"),
    ("Log", "log_param { base: 0 }", [X_SHAPE], "strictly positive"),
    ("Log", "log_param { base: 1 }", [X_SHAPE], "not 1"),
])
def test_bad_parameters_are_rejected(type_, param, arrays, match):
    layer = _layer(type_, param, len(arrays))
    with pytest.raises(LayerSetupError, match=match):
        _setup(layer, *[np.ones(s, np.float32) for s in arrays])


def test_prelu_preloaded_slope_must_match_channels():
    layer = _layer("PReLU")
    layer.blobs.add_blob(4)
    with pytest.raises(LayerSetupError, match="slope blob has 4 values"):
        _setup(layer, np.ones(X_SHAPE, np.float32))


def test_clip_with_min_above_max_gives_min_like_caffe():
    layer = _layer("Clip", "clip_param { min: 1 max: -1 }")
    bottom, top = _setup(layer, np.linspace(-3, 3, 7, dtype=np.float32))
    layer.Forward(bottom, [top])
    np.testing.assert_array_equal(top.data, 1)


def test_power_constant_output_ignores_the_input():
    layer = _layer("Power", "power_param { power: 3 scale: 0 shift: -2 }")
    bottom, top = _setup(layer, np.arange(4, dtype=np.float32))
    _fwd_bwd(layer, bottom, top, np.ones(4, np.float32))
    np.testing.assert_array_equal(top.data, -8)
    np.testing.assert_array_equal(bottom[0].diff, 0)


def test_in_place_elementwise_scale_diff_survives_the_next_forward(data):
    x, dy = data
    layer = _layer("Scale", "scale_param { axis: 0 }", 2)
    bottom = [_blob(x), _blob(dy)]
    layer.SetUp(bottom, [bottom[0]])
    layer.Forward(bottom, [bottom[0]])
    bottom[0].diff[...] = 1.0
    layer.Backward([bottom[0]], [True, True], bottom)
    np.testing.assert_allclose(bottom[1].diff, x)
    layer.Forward(bottom, [bottom[0]])
    np.testing.assert_allclose(bottom[1].diff, x)


@pytest.mark.parametrize("param, missing", [("", "min and clip_param.max"),
                                            ("clip_param { min: -1 }", "max"),
                                            ("clip_param { max: 1 }", "min")])
def test_clip_without_its_required_bounds_is_refused(param, missing):
    layer = _layer("Clip", param)
    with pytest.raises(LayerSetupError, match=rf"'\w+' \(Clip\): clip_param\.{missing} not given"):
        _setup(layer, np.ones(3, np.float32))
