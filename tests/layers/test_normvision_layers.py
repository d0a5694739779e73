"""Behaviour of LRN, MVN, BatchNorm, Deconvolution, SPP and Im2col beyond the table rows:
BatchNorm statistics across passes, global statistics, in-place use and param specs; LRN's
WITHIN_CHANNEL as Caffe composes it; Deconvolution as the adjoint of Convolution; SPP
re-planning on a new input size; Im2col's column order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from google.protobuf import text_format

from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.layer import Phase
from caffe.net import create_layer
from caffe.proto import caffe_pb2


def _make(type_: str, param: str = "", phase: Phase = Phase.TRAIN):
    lp = caffe_pb2.LayerParameter(name="L", type=type_)
    text_format.Merge(param, lp)
    return create_layer(lp, phase)


def _blob(x, dtype=torch.float64) -> Blob:
    x = torch.as_tensor(np.asarray(x), dtype=dtype)
    b = Blob(*x.shape, dtype=dtype)
    b.tensor.copy_(x)
    return b


def _setup(layer, bottom, top):
    """SetUp, then give the parameter blobs the bottoms' dtype (as the gradient checker)."""
    layer.SetUp(bottom, top)
    for p in layer.blobs:
        p.tensor = p.tensor.to(bottom[0].tensor.dtype)


def _forward(layer, *arrays, dtype=torch.float64):
    bottom = [_blob(a, dtype) for a in arrays]
    top = [Blob(dtype=dtype)]
    _setup(layer, bottom, top)
    layer.Forward(bottom, top)
    return bottom, top


# ---------------------------------------------------------------------------- BatchNorm
def test_batchnorm_moving_averages_over_two_passes():
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((4, 3, 2, 2)), rng.standard_normal((4, 3, 2, 2)) * 2 + 1
    layer = _make("BatchNorm", "batch_norm_param { moving_average_fraction: 0.8 }")
    bottom, top = _forward(layer, x1)
    bottom[0].tensor.copy_(torch.from_numpy(x2))
    layer.Forward(bottom, top)
    m = 4 * 2 * 2

    def stats(x):
        return x.mean((0, 2, 3)), x.var((0, 2, 3)) * m / (m - 1)
    (m1, v1), (m2, v2) = stats(x1), stats(x2)
    f = float(np.float32(0.8))  # proto floats are float32
    np.testing.assert_allclose(layer.blobs[0].data, m2 + f * m1, rtol=1e-10)
    np.testing.assert_allclose(layer.blobs[1].data, v2 + f * v1, rtol=1e-10)
    np.testing.assert_allclose(layer.blobs[2].data, [f + 1], rtol=1e-12)


def _with_stats(layer, mean_sum, var_sum, factor):
    for blob, value in zip(layer.blobs, (mean_sum, var_sum, [factor])):
        blob.tensor.copy_(torch.as_tensor(value, dtype=blob.tensor.dtype))


@pytest.mark.parametrize("phase, param", [(Phase.TEST, ""),
                                          (Phase.TRAIN, "use_global_stats: true")])
def test_batchnorm_global_stats_forward_backward(phase, param):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4))
    layer = _make("BatchNorm", f"batch_norm_param {{ {param} eps: 0.01 }}", phase)
    bottom, top = [_blob(x)], [Blob(dtype=torch.float64)]
    _setup(layer, bottom, top)
    mean_sum, var_sum = np.array([1.0, -2.0, 0.5]), np.array([4.0, 1.0, 9.0])
    _with_stats(layer, mean_sum, var_sum, 2.0)
    layer.Forward(bottom, top)
    mean, var = mean_sum / 2, var_sum / 2
    denom = np.sqrt(var + float(np.float32(0.01)))[None, :, None]
    np.testing.assert_allclose(top[0].data, (x - mean[None, :, None]) / denom, rtol=1e-12)
    np.testing.assert_array_equal(layer.blobs[2].data, [2.0])  # not updated
    dy = rng.standard_normal(x.shape)
    top[0].diff[...] = dy
    layer.Backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, dy / denom, rtol=1e-12)
    assert all(not b.has_diff or not b.diff.any() for b in layer.blobs)


def _in_place_and_out_of_place(type_name, x, dy):
    """(top data, bottom diff, param data...) of one forward/backward, out of place and in
    place."""
    results = []
    for in_place in (False, True):
        layer = _make(type_name)
        bottom = [_blob(x)]
        top = bottom if in_place else [Blob(dtype=torch.float64)]
        _setup(layer, bottom, top)
        layer.Forward(bottom, top)
        y = top[0].data.copy()
        top[0].diff[...] = dy
        layer.Backward(top, [True], bottom)
        results.append((y, bottom[0].diff.copy()) + tuple(b.data.copy() for b in layer.blobs))
    return results


def test_batchnorm_in_place_matches_out_of_place():
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((3, 2, 5)), rng.standard_normal((3, 2, 5))
    for a, b in zip(*_in_place_and_out_of_place("BatchNorm", x, dy)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_batchnorm_default_phase_and_param_specs():
    train, test = _make("BatchNorm"), _make("BatchNorm", phase=Phase.TEST)
    for layer in (train, test):
        layer.SetUp([_blob(np.ones((2, 3)))], [Blob(dtype=torch.float64)])
        assert [b.shape for b in layer.blobs] == [(3,), (3,), (1,)]
        assert [s.lr_mult for s in layer.layer_param.param] == [0, 0, 0]
    assert not train.use_global_stats and test.use_global_stats
    bad = _make("BatchNorm", "param { lr_mult: 0 } param { lr_mult: 1 }")
    with pytest.raises(LayerSetupError, match="param 1 has lr_mult 1"):
        bad.SetUp([_blob(np.ones((2, 3)))], [Blob()])


def test_batchnorm_single_value_per_channel():
    layer = _make("BatchNorm")
    bottom, top = _forward(layer, np.array([[1.5, -2.0]]))
    np.testing.assert_array_equal(top[0].data, 0.0)
    np.testing.assert_array_equal(layer.blobs[1].data, 0.0)  # factor m/(m-1) is 1 for m = 1
    np.testing.assert_array_equal(layer.blobs[0].data, [1.5, -2.0])


# ---------------------------------------------------------------------------- LRN / MVN
def test_lrn_within_channel_is_caffes_composition():
    """Caffe: AVE pooling (pad (n-1)/2, divisor counting the padding) of x^2, then
    (1 + alpha * pooled)^-beta, times x."""
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5))
    lrn = _make("LRN", "lrn_param { local_size: 5 alpha: 0.3 beta: 0.9 k: 7 "
                       "norm_region: WITHIN_CHANNEL }")
    _, top = _forward(lrn, x)
    pool = _make("Pooling", "pooling_param { pool: AVE kernel_size: 5 pad: 2 stride: 1 }")
    _, pooled = _forward(pool, x * x)
    np.testing.assert_allclose(top[0].data, x * (1 + 0.3 * pooled[0].data) ** -0.9,
                               rtol=1e-6)


def test_lrn_across_matches_torch_local_response_norm():
    x = torch.randn(2, 9, 3, 4, dtype=torch.float64)
    _, top = _forward(_make("LRN", "lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 k: 2 }"),
                      x.numpy())
    torch.testing.assert_close(top[0].tensor, F.local_response_norm(x, 5, 0.1, 0.75, 2.0))


@pytest.mark.parametrize("param, shape, match", [
    ("lrn_param { local_size: 4 }", (1, 2, 3, 3), "odd"),
    ("", (2, 3, 4), "4 axes"),
])
def test_lrn_errors(param, shape, match):
    with pytest.raises(LayerSetupError, match=match):
        _forward(_make("LRN", param), np.ones(shape))


def test_mvn_in_place():
    rng = np.random.default_rng(4)
    x, dy = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    for a, b in zip(*_in_place_and_out_of_place("MVN", x, dy)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_mvn_rejects_5d():
    with pytest.raises(LayerSetupError, match="at most 4 axes"):
        _forward(_make("MVN"), np.ones((1, 2, 2, 2, 2)))


# ---------------------------------------------------------------------------- Deconvolution
@pytest.mark.parametrize("conv", [
    "kernel_size: 3 stride: 2 pad: 1",
    "kernel_size: 2 dilation: 2 group: 2 pad: 1",
    "kernel_size: 2 kernel_size: 3 kernel_size: 1 stride: 2",  # 3-D
])
def test_deconvolution_is_the_adjoint_of_convolution(conv):
    """<conv(x), y> == <x, deconv(y)> with the same weights, and shapes invert."""
    three_d = conv.count("kernel_size") == 3
    xshape = (2, 4, 6, 5, 5) if three_d else (2, 4, 7, 5)
    body = f"num_output: 6 bias_term: false weight_filler {{ type: 'gaussian' }} {conv}"
    c = _make("Convolution", f"convolution_param {{ {body} }}")
    rng = np.random.default_rng(5)
    x = rng.standard_normal(xshape)
    _, cy = _forward(c, x)
    d = _make("Deconvolution",
              f"convolution_param {{ {body.replace('num_output: 6', 'num_output: 4')} }}")
    y = rng.standard_normal(cy[0].shape)
    d.blobs.add_blob(*c.blobs[0].shape)
    d.blobs[0].tensor = c.blobs[0].tensor.clone()
    _, dx = _forward(d, y)
    assert dx[0].shape == x.shape
    lhs = float((cy[0].data.astype(np.float64) * y).sum())
    rhs = float((x * dx[0].data.astype(np.float64)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_deconvolution_shapes_and_errors():
    layer = _make("Deconvolution", "convolution_param { num_output: 3 kernel_size: 4 "
                                   "stride: 2 pad: 1 group: 1 }")
    _, top = _forward(layer, np.zeros((1, 2, 5, 3)))
    assert top[0].shape == (1, 3, 10, 6)
    assert layer.blobs[0].shape == (2, 3, 4, 4) and layer.blobs[1].shape == (3,)
    bad = _make("Deconvolution", "convolution_param { num_output: 3 kernel_size: 1 pad: 2 }")
    with pytest.raises(LayerSetupError, match="Deconvolution.*pad"):
        _forward(bad, np.zeros((1, 2, 3, 3)))


# ---------------------------------------------------------------------------- SPP / Im2col
def test_spp_replans_for_a_new_input_size():
    layer = _make("SPP", "spp_param { pyramid_height: 3 pool: MAX }")
    bottom, top = _forward(layer, np.random.default_rng(6).standard_normal((2, 3, 13, 13)))
    assert top[0].shape == (2, 3 * 21)
    bottom[0].reshape(2, 3, 20, 9)
    bottom[0].tensor.copy_(torch.arange(2 * 3 * 20 * 9, dtype=torch.float64).view(2, 3, 20, 9))
    layer.Forward(bottom, top)
    assert top[0].shape == (2, 3 * 21)
    # level 0 is the global maximum of each channel: the last element of each plane
    np.testing.assert_array_equal(top[0].data[:, :3],
                                  bottom[0].data.reshape(2, 3, -1).max(-1))


def test_spp_too_small_input_fails_like_caffe():
    with pytest.raises(LayerSetupError, match="pad"):
        _forward(_make("SPP", "spp_param { pyramid_height: 3 }"), np.ones((1, 1, 3, 3)))


def test_im2col_times_weights_is_convolution():
    """Caffe's channel-major column order: conv = W.reshape(O, C*kh*kw) @ columns."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 6, 5))
    conv = _make("Convolution", "convolution_param { num_output: 4 kernel_size: 3 stride: 2 "
                                "pad: 1 dilation: 1 bias_term: false weight_filler { "
                                "type: 'gaussian' } }")
    _, cy = _forward(conv, x)
    _, cols = _forward(_make("Im2col", "convolution_param { kernel_size: 3 stride: 2 pad: 1 }"),
                       x)
    w = conv.blobs[0].data.astype(np.float64).reshape(4, -1)
    via_cols = np.einsum("ok,nkhw->nohw", w, cols[0].data)
    np.testing.assert_allclose(via_cols, cy[0].data, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cols[0].tensor.reshape(2, 27, -1),
                               F.unfold(torch.from_numpy(x), 3, padding=1, stride=2))
