"""Rows for the recurrent layers: RNN, LSTM, LSTMUnit.

The references are plain NumPy loops over time. Caffe's gradient tests check x (and x_static),
never cont (exhaustively on the smallest configurations, by the sum of squares elsewhere). The
first step of every stream starts a sequence (cont 0) so that the state the layer carries from
one forward to the next never leaks into the finite differences."""

from __future__ import annotations

import numpy as np

from layer_db import LayerCase


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _params(layer):
    return [b.data.astype(np.float64) for b in layer.blobs]


def _step_inputs(bottoms, params, static, expose, n_states, d):
    """Per-step pre-activations W_x x_t + b (+ static term) and the initial states."""
    x, cont = bottoms[0].astype(np.float64), bottoms[1].astype(np.float64)
    t, n = cont.shape
    pre = x.reshape(t, n, -1) @ params[0].T + params[1]
    if static:
        pre = pre + bottoms[2].reshape(n, -1).astype(np.float64) @ params[2].T
    if expose:
        states = [b.reshape(n, d).astype(np.float64) for b in bottoms[-n_states:]]
    else:
        states = [np.zeros((n, d)) for _ in range(n_states)]
    return pre, cont, states


def _rnn_ref(static=False, expose=False, d=7):
    def ref(bottoms, layer):
        p = _params(layer)
        pre, cont, (h,) = _step_inputs(bottoms, p, static, expose, 1, d)
        w_hh, w_ho, b_o = p[-3], p[-2], p[-1]
        outs = []
        for t in range(len(cont)):
            h = np.tanh((cont[t][:, None] * h) @ w_hh.T + pre[t])
            outs.append(np.tanh(h @ w_ho.T + b_o))
        tops = [np.stack(outs)]
        return tops + [h[None]] if expose else tops
    return ref


def _lstm_cell(c_prev, gates, cont):
    d = c_prev.shape[-1]
    i = _sigmoid(gates[..., :d])
    f = np.where(cont == 0, 0.0, cont * _sigmoid(gates[..., d:2 * d]))
    o = _sigmoid(gates[..., 2 * d:3 * d])
    g = np.tanh(gates[..., 3 * d:])
    c = f * c_prev + i * g
    return c, o * np.tanh(c)


def _lstm_ref(static=False, expose=False, d=5):
    def ref(bottoms, layer):
        p = _params(layer)
        pre, cont, (h, c) = _step_inputs(bottoms, p, static, expose, 2, d)
        w_hc = p[-1]
        outs = []
        for t in range(len(cont)):
            gates = (cont[t][:, None] * h) @ w_hc.T + pre[t]
            c, h = _lstm_cell(c, gates, cont[t][:, None])
            outs.append(h)
        tops = [np.stack(outs)]
        return tops + [h[None], c[None]] if expose else tops
    return ref


def _unit_ref(bottoms, layer):
    c_prev, x, cont = (b.astype(np.float64) for b in bottoms)
    return list(_lstm_cell(c_prev, x, cont[..., None]))


def _seq(t, n, feat, cont, static=None, states=0, d=0):
    """Bottoms x (t, n, *feat), cont, [x_static (n, *static)], [states x (1, n, d)]."""
    def make(rng):
        out = [rng.uniform(-1, 1, (t, n) + feat), np.array(cont, dtype=np.float64)]
        if static is not None:
            out.append(rng.uniform(-1, 1, (n,) + static))
        out.extend(rng.uniform(-1, 1, (1, n, d)) for _ in range(states))
        return out
    return make


def _recurrent_param(d, expose=False):
    return (f"recurrent_param {{ num_output: {d} weight_filler {{ type: 'gaussian' std: 0.2 }} "
            f"bias_filler {{ type: 'gaussian' std: 0.1 }}"
            + (" expose_hidden: true" if expose else "") + " }")


_RESTART = [[0, 0], [1, 1], [0, 1], [1, 1]]  # stream 0 starts a new sequence at t = 2

ROWS = [
    # --- RNN (Caffe's RNNLayerTest: x (T, N, 3, 2), x_static (N, 2, 3, 4), num_output 7;
    # the exhaustive row uses num_output 4 to stay fast)
    LayerCase("RNN", "cont_zero", _seq(1, 3, (3, 2), [[0, 0, 0]]), _rnn_ref(d=4),
              param=_recurrent_param(4), grad="exhaustive", check_bottoms=[0],
              bad_bottom_counts=[1, 4], bad_top_counts=[2]),
    LayerCase("RNN", "nonzero_cont_t2", _seq(2, 2, (3, 2), [[0, 0], [0, 1]]), _rnn_ref(),
              param=_recurrent_param(7), check_bottoms=[0]),
    LayerCase("RNN", "static_input", _seq(2, 2, (3, 2), [[0, 0], [0, 1]], static=(2, 3, 4)),
              _rnn_ref(static=True), param=_recurrent_param(7), check_bottoms=[0, 2]),
    LayerCase("RNN", "restart_mid_sequence", _seq(4, 2, (3,), _RESTART), _rnn_ref(d=4),
              param=_recurrent_param(4), check_bottoms=[0]),
    LayerCase("RNN", "expose_hidden", _seq(3, 2, (3,), [[1, 1], [1, 0], [1, 1]], states=1,
                                           d=4),
              _rnn_ref(expose=True, d=4), param=_recurrent_param(4, expose=True), num_tops=2,
              grad="none", bad_bottom_counts=[2, 5], bad_top_counts=[1]),
    LayerCase("RNN", "expose_hidden_static",
              _seq(2, 3, (2, 2), [[0, 1, 1], [1, 1, 0]], static=(3,), states=1, d=4),
              _rnn_ref(static=True, expose=True, d=4), param=_recurrent_param(4, expose=True),
              num_tops=2, grad="none"),
    # --- LSTM (Caffe's LSTMLayerTest uses the same shapes; smaller num_output keeps it fast)
    LayerCase("LSTM", "cont_zero", _seq(1, 3, (3, 2), [[0, 0, 0]]), _lstm_ref(d=3),
              param=_recurrent_param(3), grad="exhaustive", check_bottoms=[0],
              bad_bottom_counts=[1, 4], bad_top_counts=[2]),
    LayerCase("LSTM", "nonzero_cont_t2", _seq(2, 2, (3, 2), [[0, 0], [0, 1]]), _lstm_ref(),
              param=_recurrent_param(5), check_bottoms=[0]),
    LayerCase("LSTM", "static_input", _seq(2, 2, (3, 2), [[0, 0], [0, 1]], static=(2, 3, 4)),
              _lstm_ref(static=True, d=3), param=_recurrent_param(3), check_bottoms=[0, 2]),
    LayerCase("LSTM", "restart_mid_sequence", _seq(4, 2, (3,), _RESTART), _lstm_ref(d=3),
              param=_recurrent_param(3), check_bottoms=[0]),
    LayerCase("LSTM", "expose_hidden", _seq(3, 2, (3,), [[1, 1], [1, 0], [1, 1]], states=2,
                                            d=3),
              _lstm_ref(expose=True, d=3), param=_recurrent_param(3, expose=True), num_tops=3,
              grad="none", bad_bottom_counts=[3, 6], bad_top_counts=[1, 2]),
    LayerCase("LSTM", "expose_hidden_static",
              _seq(2, 3, (2, 2), [[0, 1, 1], [1, 1, 0]], static=(3,), states=2, d=3),
              _lstm_ref(static=True, expose=True, d=3), param=_recurrent_param(3, expose=True),
              num_tops=3, grad="none"),
    # --- LSTMUnit (Caffe's TestLSTMUnitGradient*: c_prev (1, 3, 7), x (1, 3, 28))
    LayerCase("LSTMUnit", "cont_zero",
              lambda rng: [rng.uniform(-1, 1, (1, 2, 3)), rng.uniform(-1, 1, (1, 2, 12)),
                           np.zeros((1, 2))],
              _unit_ref, num_tops=2, grad="exhaustive", check_bottoms=[0, 1],
              bad_bottom_counts=[2, 4], bad_top_counts=[1, 3]),
    LayerCase("LSTMUnit", "nonzero_cont",
              lambda rng: [rng.uniform(-1, 1, (1, 3, 7)), rng.uniform(-1, 1, (1, 3, 28)),
                           np.array([[1.0, 0.0, 1.0]])],
              _unit_ref, num_tops=2, check_bottoms=[0, 1]),
    LayerCase("LSTMUnit", "fractional_cont",
              lambda rng: [rng.standard_normal((1, 4, 2)), 2 * rng.standard_normal((1, 4, 8)),
                           np.array([[0.5, 0.0, 1.0, 2.0]])],
              _unit_ref, num_tops=2, grad="none"),
]
