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

from collections.abc import Sequence

import torch

from caffe._layers.recurrent.recurrent_base import (
    RecurrentLayer,
    lstm_cell_backward,
    lstm_cell_forward,
    stale,
)
from caffe.registry import register_layer


@register_layer("LSTM")
class LSTM(RecurrentLayer):
    state_names = ("h", "c")
    gate_mult = 4
    max_bottom_blobs = 5
    max_top_blobs = 3
    fused_needs_binary_cont0 = True
    #: the parameter tensors the reordered buffers were last made for
    _reorder_key: list[torch.Tensor] | None = None
    #: the diff tensors whose pieces the gradients were last added to
    _diff_key: list[torch.Tensor] | None = None

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
        y, h, c = torch.lstm(x, states, [w_ih, w_hc, b, self._zero_bias(b)], True, 1, 0.0, train,
                             False, False)
        return y, [h, c]

    def _fused_params(self, record: bool) -> list[torch.Tensor]:
        """Every parameter blob has the 4D gate rows in Caffe's order i, f, o, g; torch's
        kernel takes i, f, g, o. The reordered copies live in buffers kept between forwards
        (autograd's leaves), refilled by one foreach copy."""
        blobs = [b.tensor for b in self.blobs]
        if stale(self._reorder_key, blobs):
            self._buffers = self._kernel_buffers(blobs)
            self._into_buffers = (_gate_blocks(self._buffers, self.num_output, False),
                                  _gate_blocks(blobs, self.num_output, True))
            self._reorder_key = blobs
        with torch.no_grad():
            torch._foreach_copy_(*self._into_buffers)
        return self._buffers

    def _kernel_buffers(self, blobs: list[torch.Tensor]) -> list[torch.Tensor]:
        """New buffers shaped like the parameter blobs, and a new zero second bias. For cuDNN
        (on CUDA, without a static input, whose weights are joined per call) W_x, W_h, b and
        the zero bias become views of one buffer in cuDNN's layout, as nn.LSTM's
        ``flatten_parameters`` makes its weights: torch.lstm then hands that buffer to cuDNN
        as it is, instead of compacting the weights into a new one at every call."""
        bufs = [torch.empty_like(t) for t in blobs]
        zero = torch.zeros_like(blobs[1])
        if not self.static_input and _cudnn_flattenable(zero):
            from torch.backends.cudnn import rnn as cudnn_rnn
            with torch.no_grad(), torch.cuda.device_of(zero):
                torch._cudnn_rnn_flatten_weight(
                    [bufs[0], bufs[2], bufs[1], zero], 4, self.K,
                    cudnn_rnn.get_cudnn_mode("LSTM"), self.num_output, 0, 1, False, False)
        self._zeros = zero  # what _zero_bias hands the kernel
        return [b.requires_grad_(True) for b in bufs]

    def _add_param_grads(self, grads: Sequence[torch.Tensor]) -> None:
        diffs = [b.diff_tensor for b in self.blobs]
        if stale(self._diff_key, diffs):
            self._diff_pieces = _gate_blocks(diffs, self.num_output, False)
            self._diff_key = diffs
        torch._foreach_add_(self._diff_pieces, _gate_blocks(grads, self.num_output, True))


def _cudnn_flattenable(t: torch.Tensor) -> bool:
    """Whether torch runs its recurrent kernels on ``t`` with cuDNN, whose weights may then
    share one buffer in cuDNN's layout."""
    return (t.is_cuda and torch.backends.cudnn.is_acceptable(t)
            and torch._use_cudnn_rnn_flatten_weight())


def _gate_blocks(tensors: Sequence[torch.Tensor], d: int, swap: bool) -> list[torch.Tensor]:
    """Views of each tensor's 4D gate rows as 3 pieces: rows [0, 2D), then [2D, 3D) and
    [3D, 4D), or with ``swap`` those two the other way round. Paired piece by piece, a plain
    and a swapped list take Caffe's gate order i, f, o, g to torch's i, f, g, o and back."""
    pieces: list[torch.Tensor] = []
    for t in tensors:
        first, third, fourth = t.split_with_sizes((2 * d, d, d))
        pieces += (first, fourth, third) if swap else (first, third, fourth)
    return pieces
