"""Recurrent layers (RNN, LSTM, LSTMUnit): the behaviour the layer table does not cover.

State carried across forward calls, cont resets, expose_hidden, what backward writes and leaves
alone, and the OpenCV reference weights loading into Caffe's parameter layout."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe.blob import Blob
from caffe.errors import LayerSetupError, ShapeMismatchError
from caffe.net import create_layer
from caffe.proto import caffe_pb2
from caffe.testing import make_blobs

OPENCV = "/work/shared/models/opencv_layers"
FILLERS = ("weight_filler { type: 'uniform' min: -0.5 max: 0.5 } "
           "bias_filler { type: 'uniform' min: -0.3 max: 0.3 }")


def _layer(kind: str, d: int, expose: bool = False, n_bottom: int = 2):
    lp = caffe_pb2.LayerParameter(name="rec", type=kind)
    text_format.Merge(f"recurrent_param {{ num_output: {d} {FILLERS} "
                      f"expose_hidden: {'true' if expose else 'false'} }}", lp)
    lp.bottom.extend(f"b{i}" for i in range(n_bottom))
    return create_layer(lp, caffe.TRAIN)


def _run(layer, arrays, n_top=1, setup=True):
    bottom = make_blobs(*arrays, dtype=torch.float32)
    top = [Blob() for _ in range(n_top)]
    if setup:
        layer.SetUp(bottom, top)
    layer.Forward(bottom, top)
    return [t.data.copy() for t in top], bottom, top


def _copy_params(dst, src):
    for a, b in zip(dst.blobs, src.blobs):
        a.data[...] = b.data


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_state_carries_across_forward_calls(kind):
    """As Caffe's TestForward: one T-step forward equals T one-step forwards with cont 1
    after the first, and differs from them once cont resets every step."""
    rng = np.random.default_rng(0)
    t_, n, d = 3, 2, 4
    x = rng.standard_normal((t_, n, 3, 2))
    cont = (np.arange(t_)[:, None] > 0).repeat(n, 1).astype(np.float64)
    full = _layer(kind, d)
    (y_full,), _, _ = _run(full, [x, cont])

    step = _layer(kind, d)
    step.SetUp(make_blobs(x[:1], cont[:1], dtype=torch.float32), [Blob()])
    _copy_params(step, full)
    for t in range(t_):
        (y,), _, _ = _run(step, [x[t:t + 1], cont[t:t + 1]], setup=False)
        np.testing.assert_allclose(y[0], y_full[t], rtol=1e-5, atol=1e-6)

    fresh = _layer(kind, d)
    fresh.SetUp(make_blobs(x[:1], cont[:1], dtype=torch.float32), [Blob()])
    _copy_params(fresh, full)
    for t in range(t_):
        (y,), _, _ = _run(fresh, [x[t:t + 1], np.zeros((1, n))], setup=False)
        if t == 0:
            np.testing.assert_allclose(y[0], y_full[0], rtol=1e-5, atol=1e-6)
        else:
            assert not np.allclose(y[0], y_full[t])
    fresh.reset()
    (y,), _, _ = _run(fresh, [x[:1], np.ones((1, n))], setup=False)
    np.testing.assert_allclose(y[0], y_full[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_cont_zero_mid_sequence_restarts_the_stream(kind):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 2, 3))
    cont = np.array([[0, 0], [1, 1], [1, 1], [0, 1], [1, 1]], dtype=np.float64)
    layer = _layer(kind, 3)
    (y,), _, _ = _run(layer, [x, cont])
    tail = _layer(kind, 3)
    tail.SetUp(make_blobs(x[3:], cont[3:], dtype=torch.float32), [Blob()])
    _copy_params(tail, layer)
    (y_tail,), _, _ = _run(tail, [x[3:], np.array([[0, 0], [1, 1]])], setup=False)
    np.testing.assert_allclose(y[3:, 0], y_tail[:, 0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(y[3:, 1], y_tail[:, 1])


@pytest.mark.parametrize("kind,n_states", [("RNN", 1), ("LSTM", 2)])
def test_expose_hidden_carries_state_between_calls(kind, n_states):
    rng = np.random.default_rng(2)
    t_, n, d = 4, 3, 5
    x = rng.standard_normal((t_, n, 2))
    cont = np.ones((t_, n))
    cont[0] = 0
    cont[2, 1] = 0
    zeros = [np.zeros((1, n, d))] * n_states
    whole = _layer(kind, d, expose=True, n_bottom=2 + n_states)
    (y_whole, *final), _, _ = _run(whole, [x, cont, *zeros], n_top=1 + n_states)

    half = _layer(kind, d, expose=True, n_bottom=2 + n_states)
    half.SetUp(make_blobs(x[:2], cont[:2], *zeros, dtype=torch.float32),
               [Blob() for _ in range(1 + n_states)])
    _copy_params(half, whole)
    (y1, *states), _, _ = _run(half, [x[:2], cont[:2], *zeros], 1 + n_states, setup=False)
    (y2, *states), _, _ = _run(half, [x[2:], cont[2:], *states], 1 + n_states, setup=False)
    np.testing.assert_allclose(np.concatenate([y1, y2]), y_whole, rtol=1e-5, atol=1e-6)
    for s, f in zip(states, final):
        np.testing.assert_allclose(s, f, rtol=1e-5, atol=1e-6)
    if kind == "LSTM":  # the output is h itself
        np.testing.assert_allclose(final[0][0], y_whole[-1], rtol=1e-6)


def _net(kind, expose, static, force_backward=True):
    n_states = (2 if kind == "LSTM" else 1) if expose else 0
    shapes = ["shape { dim: 3 dim: 2 dim: 4 }", "shape { dim: 3 dim: 2 }"]
    names = ["x", "cont"]
    if static:
        shapes.append("shape { dim: 2 dim: 3 }")
        names.append("xs")
    states = ["h0", "c0"][:n_states]
    shapes += ["shape { dim: 1 dim: 2 dim: 3 }"] * n_states
    names += states
    tops = ["y"] + [s[0] + "T" for s in states]
    text = (f"force_backward: {'true' if force_backward else 'false'}\n"
            "layer { name: 'in' type: 'Input' "
            + " ".join(f"top: '{b}'" for b in names)
            + " input_param { " + " ".join(shapes) + " } }\n"
            f"layer {{ name: 'rec' type: '{kind}' "
            + " ".join(f"bottom: '{b}'" for b in names) + " "
            + " ".join(f"top: '{t}'" for t in tops)
            + f" recurrent_param {{ num_output: 3 {FILLERS}"
            + (" expose_hidden: true" if expose else "") + " } }\n")
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TRAIN), names, tops


def _fill_inputs(net, names, rng):
    for name in names:
        net.blobs[name].data[...] = rng.uniform(-1, 1, net.blobs[name].shape)
    net.blobs["cont"].data[...] = [[0, 0], [1, 1], [0, 1]]


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_expose_hidden_backward_leaves_states_and_cont_alone(kind):
    net, names, tops = _net(kind, expose=True, static=True)
    rng = np.random.default_rng(3)
    _fill_inputs(net, names, rng)
    net.forward()
    for t in tops:
        net.blobs[t].diff[...] = rng.uniform(-1, 1, net.blobs[t].shape)
    net.backward()
    dx = net.blobs["x"].diff.copy()
    assert np.abs(dx).sum() > 0 and np.abs(net.blobs["xs"].diff).sum() > 0
    for name in ["cont", *names[3:]]:
        assert not net.blobs[name].diff.any(), name
    # the diffs of the exposed final states do not flow back
    for t in tops[1:]:
        net.blobs[t].diff[...] = 100.0
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, dx)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_param_diffs_accumulate_and_x_diff_is_written_without_force_backward(kind):
    """Caffe runs the unrolled net's backward unconditionally: the input diff is written even
    when the net does not need it, and parameter diffs add up across backward calls."""
    net, names, _ = _net(kind, expose=False, static=False, force_backward=False)
    rng = np.random.default_rng(4)
    _fill_inputs(net, names, rng)
    net.forward()
    net.blobs["y"].diff[...] = 1.0
    layer = net.layers[1]
    layer.backward([net.blobs["y"]], [False, False], [net.blobs["x"], net.blobs["cont"]])
    first = [p.diff.copy() for p in net.params["rec"]]
    assert net.blobs["x"].diff.any() and not net.blobs["cont"].diff.any()
    layer.backward([net.blobs["y"]], [False, False], [net.blobs["x"], net.blobs["cont"]])
    for p, f in zip(net.params["rec"], first):
        assert f.any()
        np.testing.assert_allclose(p.diff, 2 * f, rtol=1e-6)


def test_param_order_and_shapes_with_static_input():
    net, _, _ = _net("RNN", expose=False, static=True)
    assert [p.shape for p in net.params["rec"]] == [(3, 4), (3,), (3, 3), (3, 3), (3, 3), (3,)]
    net, _, _ = _net("LSTM", expose=True, static=True)
    assert [p.shape for p in net.params["rec"]] == [(12, 4), (12,), (12, 3), (12, 3)]


def test_batch_size_change_follows_caffes_growing_state_blobs():
    """Caffe's state blobs only grow: a smaller batch continues from the first streams'
    states, a batch larger than any before starts from zeros. Checked against the same weights
    with the states passed explicitly (expose_hidden)."""
    rng = np.random.default_rng(5)
    x1, x2, x3 = (rng.standard_normal((2, n, 2)) for n in (3, 2, 6))
    first_cont = np.array([[0, 0, 0], [1, 1, 1]])
    layer = _layer("LSTM", 3)
    _run(layer, [x1, first_cont])
    (y_small,), _, _ = _run(layer, [x2, np.ones((2, 2))], setup=False)
    (y_back,), _, _ = _run(layer, [x1, np.ones((2, 3))], setup=False)
    (y_big,), _, _ = _run(layer, [x3, np.ones((2, 6))], setup=False)

    def exposed(x, cont, h0, c0):
        ref = _layer("LSTM", 3, expose=True, n_bottom=4)
        ref.SetUp(make_blobs(x, cont, h0, c0, dtype=torch.float32), [Blob() for _ in range(3)])
        _copy_params(ref, layer)
        return _run(ref, [x, cont, h0, c0], 3, setup=False)[0]

    zeros3, zeros6 = np.zeros((1, 3, 3)), np.zeros((1, 6, 3))
    _, h_t, c_t = exposed(x1, first_cont, zeros3, zeros3)
    y_ref, h_s, c_s = exposed(x2, np.ones((2, 2)), h_t[:, :2], c_t[:, :2])
    np.testing.assert_allclose(y_small, y_ref, rtol=1e-5, atol=1e-6)
    # back to 3 streams: the first two continue the small batch, the third the first call
    y_ref, _, _ = exposed(x1, np.ones((2, 3)), np.concatenate([h_s, h_t[:, 2:]], 1),
                          np.concatenate([c_s, c_t[:, 2:]], 1))
    np.testing.assert_allclose(y_back, y_ref, rtol=1e-5, atol=1e-6)
    y_ref, _, _ = exposed(x3, np.ones((2, 6)), zeros6, zeros6)
    np.testing.assert_allclose(y_big, y_ref, rtol=1e-5, atol=1e-6)


def test_shape_errors():
    layer = _layer("RNN", 3)
    x = np.zeros((3, 2, 4))
    with pytest.raises(LayerSetupError, match="cont"):
        _run(layer, [x, np.zeros((3, 3))])
    layer = _layer("RNN", 3)
    _run(layer, [x, np.zeros((3, 2))])
    with pytest.raises(LayerSetupError, match="timesteps changed"):
        _run(layer, [np.zeros((4, 2, 4)), np.zeros((4, 2))], setup=False)
    with pytest.raises(ShapeMismatchError, match="features"):
        _run(layer, [np.zeros((3, 2, 5)), np.zeros((3, 2))], setup=False)
    layer = _layer("LSTM", 3, expose=True, n_bottom=4)
    with pytest.raises(ShapeMismatchError, match="c0"):
        _run(layer, [x, np.zeros((3, 2)), np.zeros((1, 2, 3)), np.zeros((1, 2, 4))], 3)
    with pytest.raises(LayerSetupError, match="num_output"):
        _run(_layer("LSTM", 0), [x, np.zeros((3, 2))])


def test_lstm_unit_fractional_cont_backward_is_caffes_formula():
    """With cont outside {0, 1} Caffe's LSTMUnit differentiates f = cont * sigmoid(x_f) as
    f (1 - f): a NumPy transcription of that formula must match."""
    rng = np.random.default_rng(6)
    n, d = 4, 3
    c_prev, x = rng.standard_normal((1, n, d)), rng.standard_normal((1, n, 4 * d))
    cont = np.array([[0.5, 0.0, 1.0, 2.0]])
    lp = caffe_pb2.LayerParameter(name="unit", type="LSTMUnit")
    layer = create_layer(lp, caffe.TRAIN)
    bottom = make_blobs(c_prev, x, cont)
    top = [Blob(dtype=torch.float64), Blob(dtype=torch.float64)]
    layer.SetUp(bottom, top)
    layer.Forward(bottom, top)
    dc, dh = rng.standard_normal((1, n, d)), rng.standard_normal((1, n, d))
    top[0].diff[...] = dc
    top[1].diff[...] = dh
    layer.Backward(top, [True, False, False], bottom)

    sig = 1 / (1 + np.exp(-x))
    i, o, g = sig[..., :d], sig[..., 2 * d:3 * d], np.tanh(x[..., 3 * d:])
    f = cont[..., None] * sig[..., d:2 * d]
    c = f * c_prev + i * g
    tc = np.tanh(c)
    ct = dc + dh * o * (1 - tc ** 2)
    expected = np.concatenate([ct * g * i * (1 - i), ct * c_prev * f * (1 - f),
                               dh * tc * o * (1 - o), ct * i * (1 - g ** 2)], -1)
    np.testing.assert_allclose(bottom[0].diff, ct * f, rtol=1e-10)
    np.testing.assert_allclose(bottom[1].diff, expected, rtol=1e-10, atol=1e-12)
    assert not bottom[2].diff.any()


def _np_sigmoid(v):
    return 1 / (1 + np.exp(-v))


@pytest.mark.skipif(not os.path.isdir(OPENCV), reason="OpenCV reference data not available")
@pytest.mark.parametrize("kind,n_params", [("LSTM", 3), ("RNN", 5)])
def test_opencv_reference_weights_fit_the_parameter_layout(kind, n_params):
    """OpenCV's dnn test data holds the blobs of a Caffe LSTM/RNN with num_output 17 and a
    12 x 2 x 36 x 37 input: they load by index into our blobs, and the forward matches a NumPy
    loop over those weights (gate order i, f, o, g; o_t = tanh(W_ho h_t + b_o))."""
    x = np.load(f"{OPENCV}/recurrent.input.npy")
    stem = "lstm" if kind == "LSTM" else "rnn"
    weights = [np.load(f"{OPENCV}/{stem}.prototxt.w_{i}.npy") for i in range(n_params)]
    t_, n = x.shape[:2]
    cont = np.ones((t_, n))
    cont[0] = 0
    layer = _layer(kind, 17)
    bottom = make_blobs(x, cont, dtype=torch.float32)
    top = [Blob()]
    layer.SetUp(bottom, top)
    assert [b.shape for b in layer.blobs] == [w.shape for w in weights]
    for b, w in zip(layer.blobs, weights):
        b.data[...] = w
    layer.Forward(bottom, top)

    w = [a.astype(np.float64) for a in weights]
    pre = x.reshape(t_, n, -1).astype(np.float64) @ w[0].T + w[1]
    h, c, outs = np.zeros((n, 17)), np.zeros((n, 17)), []
    for t in range(t_):
        a = (cont[t][:, None] * h) @ w[2].T + pre[t]
        if kind == "LSTM":
            s = _np_sigmoid(a)
            c = cont[t][:, None] * s[:, 17:34] * c + s[:, :17] * np.tanh(a[:, 51:])
            h = s[:, 34:51] * np.tanh(c)
            outs.append(h)
        else:
            h = np.tanh(a)
            outs.append(np.tanh(h @ w[3].T + w[4]))
    np.testing.assert_allclose(top[0].data, np.stack(outs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "LSTMUnit"])
def test_no_backpropagation_into_cont(kind):
    # Caffe's RecurrentLayer and LSTMUnitLayer abort when asked for a gradient of cont
    if kind == "LSTMUnit":
        layer = create_layer(caffe_pb2.LayerParameter(name="rec", type=kind), caffe.TRAIN)
        arrays, n_top, cont = [np.zeros((1, 2, 3)), np.zeros((1, 2, 12)), np.ones((1, 2))], 2, 2
    else:
        layer = _layer(kind, 3)
        arrays, n_top, cont = [np.zeros((2, 2, 4)), np.ones((2, 2))], 1, 1
    _, bottom, top = _run(layer, arrays, n_top)
    wanted = [True] * len(bottom)
    with pytest.raises(LayerSetupError, match=rf"\({kind}\) cannot backpropagate to its "
                                              rf"sequence continuation \(cont\) input "
                                              rf"\(bottom {cont}\)"):
        layer.Backward(top, wanted, bottom)
    wanted[cont] = False
    layer.Backward(top, wanted, bottom)


def test_lstm_unit_forget_gate_is_exactly_zero_where_cont_is_zero():
    # Caffe's LSTMUnit branches on cont == 0: even a NaN forget pre-activation is dropped there
    x = np.random.default_rng(2).standard_normal((1, 2, 12))
    x[0, :, 3:6] = np.nan
    layer = create_layer(caffe_pb2.LayerParameter(name="unit", type="LSTMUnit"), caffe.TRAIN)
    (c, h), bottom, top = _run(layer, [np.ones((1, 2, 3)), x, np.array([[0.0, 1.0]])], 2)
    assert np.isfinite(c[0, 0]).all() and np.isfinite(h[0, 0]).all() and np.isnan(c[0, 1]).all()
