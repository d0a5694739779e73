"""RNN: a simple (Elman) recurrent layer over T time steps, as Caffe's RNNLayer.

    h_t = tanh(W_hh (cont_t * h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static])
    o_t = tanh(W_ho h_t + b_o)

bottoms: x (T, N, ...), cont (T, N), [x_static (N, ...)], [h0 (1, N, D) with expose_hidden];
tops: o (T, N, D), [hT (1, N, D) with expose_hidden]; D = recurrent_param.num_output.
Parameter blobs: W_xh (D, K), b_h (D,), [W_xh_static (D, K_static)], W_hh (D, D), W_ho (D, D),
b_o (D,). See caffe/_layers/recurrent/recurrent_base.py for the shared rules (carried state,
what backward writes, when the fused ``torch.rnn_tanh`` path runs instead of the loop over
time)."""

from __future__ import annotations

import torch

from caffe._layers.recurrent.recurrent_base import RecurrentLayer
from caffe.proto import caffe_pb2
from caffe.registry import register_layer


@register_layer("RNN")
class RNN(RecurrentLayer):
    state_names = ("h",)
    gate_mult = 1
    max_bottom_blobs = 4
    max_top_blobs = 2

    def extra_blob_specs(self) -> list[tuple[tuple[int, ...], caffe_pb2.FillerParameter]]:
        p = self.layer_param.recurrent_param
        d = self.num_output
        return [((d, d), p.weight_filler), ((d,), p.bias_filler)]

    def _output_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        first = 3 + self.static_input
        return self.blobs[first].tensor, self.blobs[first + 1].tensor

    def recur(self, wx: torch.Tensor, cont: torch.Tensor,
              states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], tuple]:
        w_hh = self._weights()[3]
        h = states[0]
        hs, gated = [], []
        for t in range(wx.shape[0]):
            hc = cont[t] * h
            h = torch.tanh(torch.addmm(wx[t], hc, w_hh.t()))
            gated.append(hc)
            hs.append(h)
        hidden = torch.stack(hs)
        o = _output(hidden, *self._output_weights())
        # the top may be changed in place downstream: keep what backward needs apart
        return o, [h], (hidden, torch.stack(gated), 1 - o * o)

    def recur_fused(self, x: torch.Tensor, w_ih: torch.Tensor, params: list[torch.Tensor],
                    states: list[torch.Tensor],
                    train: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        first = 2 + self.static_input
        b, w_hh, w_ho, b_o = params[1], *params[first:first + 3]
        hidden, h = torch.rnn_tanh(x, states[0], [w_ih, w_hh, b, self._zero_bias], True,
                                   1, 0.0, train, False, False)
        return _output(hidden, w_ho, b_o), [h]

    def recur_backward(self, dy: torch.Tensor, cont: torch.Tensor,
                       cache: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, gated, o_slope = cache
        t_, n, d = hidden.shape
        w_hh = self._weights()[3]
        w_ho, _ = self._output_weights()
        do2 = (dy * o_slope).view(t_ * n, d)
        first = 3 + self.static_input
        self.blobs[first].diff_tensor.addmm_(do2.t(), hidden.view(t_ * n, d))
        self.blobs[first + 1].diff_tensor.add_(do2.sum(0))
        dh_out = (do2 @ w_ho).view(t_, n, d)
        da = torch.empty_like(hidden)
        carry = torch.zeros_like(hidden[0])
        for t in range(t_ - 1, -1, -1):
            da[t] = (dh_out[t] + carry) * (1 - hidden[t] * hidden[t])
            carry = cont[t] * (da[t] @ w_hh)
        return da, gated


def _output(hidden: torch.Tensor, w_ho: torch.Tensor, b_o: torch.Tensor) -> torch.Tensor:
    """o = tanh(W_ho h + b_o) for the hidden states (T, N, D)."""
    t_, n, d = hidden.shape
    return torch.tanh(torch.addmm(b_o, hidden.reshape(t_ * n, d), w_ho.t())).view(t_, n, d)
