"""LSTM: a long short-term memory layer over T time steps, as Caffe's LSTMLayer.

    [i', f', o', g'] = W_hc (cont_t * h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static]
    i, o = sigmoid(i', o'); f = cont_t * sigmoid(f'); g = tanh(g')
    c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)

bottoms: x (T, N, ...), cont (T, N), [x_static (N, ...)], [h0, c0 (1, N, D) with
expose_hidden]; tops: h (T, N, D), [hT, cT (1, N, D) with expose_hidden]; D =
recurrent_param.num_output. Parameter blobs: W_xc (4D, K), b_c (4D,), [W_xc_static
(4D, K_static)], W_hc (4D, D); within 4D the gates are ordered i, f, o, g. See
caffe/_layers/recurrent/recurrent_base.py for the shared rules (carried state, what backward
writes, when the fused ``torch.lstm`` path runs instead of the loop over time)."""

from __future__ import annotations

import torch

from caffe._layers.recurrent.recurrent_base import (
    RecurrentLayer,
    lstm_cell_backward,
    lstm_cell_forward,
)
from caffe.registry import register_layer


@register_layer("LSTM")
class LSTM(RecurrentLayer):
    state_names = ("h", "c")
    gate_mult = 4
    max_bottom_blobs = 5
    max_top_blobs = 3
    fused_needs_binary_cont0 = True
    reorders_rows = True
    cudnn_mode = "LSTM"

    def recur(self, wx: torch.Tensor, cont: torch.Tensor,
              states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], tuple]:
        w_hc = self._weights()[3]
        h, c = states
        hs, gated, c_prevs, acts = [], [], [], []
        for t in range(wx.shape[0]):
            hc = cont[t] * h
            c_prevs.append(c)
            c, h, a = lstm_cell_forward(c, torch.addmm(wx[t], hc, w_hc.t()), cont[t])
            gated.append(hc)
            hs.append(h)
            acts.append(a)
        return torch.stack(hs), [h, c], (torch.stack(gated), c_prevs, acts)

    def recur_backward(self, dy: torch.Tensor, cont: torch.Tensor,
                       cache: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        gated, c_prevs, acts = cache
        w_hc = self._weights()[3]
        t_, n, d = gated.shape
        da = dy.new_empty(t_, n, 4 * d)
        dc = torch.zeros_like(gated[0])  # nothing flows back from cT
        carry = torch.zeros_like(gated[0])
        for t in range(t_ - 1, -1, -1):
            dc, da[t] = lstm_cell_backward(dc, dy[t] + carry, c_prevs[t], acts[t])
            carry = cont[t] * (da[t] @ w_hc)
        return da, gated

    def recur_fused(self, x: torch.Tensor, w_ih: torch.Tensor, params: list[torch.Tensor],
                    states: list[torch.Tensor],
                    train: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, w_hc = params[1], params[2 + self.static_input]
        y, h, c = torch.lstm(x, states, [w_ih, w_hc, b, self._zero_bias], True, 1, 0.0, train,
                             False, False)
        return y, [h, c]

    def row_pieces(self, tensors: list[torch.Tensor], swap: bool) -> list[torch.Tensor]:
        """Each parameter blob has the 4D gate rows in Caffe's order i, f, o, g; torch's
        kernel takes i, f, g, o. Views of each tensor as 3 pieces: rows [0, 2D), then [2D, 3D)
        and [3D, 4D), or with ``swap`` those two the other way round."""
        d = self.num_output
        pieces: list[torch.Tensor] = []
        for t in tensors:
            first, third, fourth = t.split_with_sizes((2 * d, d, d))
            pieces += (first, fourth, third) if swap else (first, third, fourth)
        return pieces
