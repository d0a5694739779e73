"""LSTMUnit: one LSTM step, the cell of Caffe's unrolled LSTM.

bottoms: c_prev (1, N, D), gate pre-activations x (1, N, 4D) ordered i, f, o, g, cont (1, N);
tops: c (1, N, D), h (1, N, D).

    i, o = sigmoid(x_i, x_o); f = cont * sigmoid(x_f) (0 where cont is 0); g = tanh(x_g)
    c = f * c_prev + i * g;  h = o * tanh(c)

Backward writes the diffs of c_prev and x (both, as Caffe, whenever either is requested),
never of cont; the forget-gate derivative is f (1 - f) with f already scaled by cont."""

from __future__ import annotations

from caffe._layers.base import refuse_backward
from caffe._layers.recurrent.recurrent_base import (
    lstm_cell_backward,
    lstm_cell_forward,
    lstm_gates,
)
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("LSTMUnit")
class LSTMUnit(Layer):
    exact_num_bottom_blobs = 3
    exact_num_top_blobs = 2
    no_force_backward_bottoms = (2,)
    writes_unrequested_diffs = True  # both input diffs when either is asked for

    def batch_axis_of(self, i: int) -> int:
        """Every bottom is one timestep, ``1 x N x ...``."""
        return 1

    def reshape(self, bottom, top):
        c_prev, x, cont = bottom
        n = c_prev.shape[1] if c_prev.num_axes > 1 else -1
        ok = (c_prev.num_axes == 3 and x.num_axes == 3 and cont.num_axes == 2
              and c_prev.shape[0] == x.shape[0] == cont.shape[0] == 1
              and x.shape[1] == cont.shape[1] == n and x.shape[2] == 4 * c_prev.shape[2])
        if not ok:
            raise LayerSetupError(
                f"Layer '{self.name}' (LSTMUnit): bottoms must be c_prev (1, N, D), x "
                f"(1, N, 4D) and cont (1, N); got {c_prev.shape}, {x.shape} and {cont.shape}")
        top[0].reshape(c_prev.shape)
        top[1].reshape(c_prev.shape)

    def forward(self, bottom, top):
        x = bottom[1].tensor
        cont = bottom[2].tensor.to(x.dtype).unsqueeze(-1)
        c, h, _ = lstm_cell_forward(bottom[0].tensor, x, cont)
        top[0].tensor = c
        top[1].tensor = h

    def backward(self, top, propagate_down, bottom):
        refuse_backward(self, propagate_down, {2: "sequence continuation (cont)"})
        if not (propagate_down[0] or propagate_down[1]):
            return
        x = bottom[1].tensor
        cont = bottom[2].tensor.to(x.dtype).unsqueeze(-1)
        tanh_c = top[0].tensor.tanh()
        acts = (*lstm_gates(x, cont), tanh_c)
        dc_prev, dx = lstm_cell_backward(top[0].diff_tensor, top[1].diff_tensor,
                                         bottom[0].tensor, acts)
        bottom[0].diff_tensor = dc_prev
        bottom[1].diff_tensor = dx
