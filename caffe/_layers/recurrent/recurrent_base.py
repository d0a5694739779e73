"""Shared machinery of the recurrent layers (RNN, LSTM) and the LSTM cell step.

Caffe builds RNN and LSTM as a net unrolled over the T time steps; here the same computation
runs either as one fused call of torch's own recurrent kernel (``torch.lstm`` /
``torch.rnn_tanh``: oneDNN on CPU; on CUDA torch's native kernels, or cuDNN's only when
``caffe.set_precision`` allows reduced precision, see ``_cudnn_kernel``) or as a loop over time
on whole (N, ...) batches with an explicit backprop through time.

Bottoms: x (T, N, ...), the sequence-continuation markers cont (T, N), an optional static input
x_static (N, ...), and with ``expose_hidden`` the initial states (1, N, num_output) each (h0 for
RNN; h0 then c0 for LSTM). Tops: the output (T, N, num_output), and with ``expose_hidden`` the
final states (hT, and cT for LSTM).

Every step t computes the pre-activation
    a_t = W_h (cont_t * h_{t-1}) + (W_x x_t + b) [+ W_static x_static]
so cont_t = 0 starts a new sequence. Without ``expose_hidden`` the states at the end of one
forward are the initial states of the next (zeros at first), as Caffe copies them across calls.

Fused path: when every cont_t at t >= 1 equals 1 (T = 1 always qualifies; LSTM also needs each
cont_0 to be 0 or 1), the markers only act at t = 0, and the recurrence is the standard one
started from h_0' = cont_0 * h_prev (and c_0' = cont_0 * c_prev for LSTM, whose forget gate is
scaled by cont). Its backward is then autograd's over the fused kernel, which equals Caffe's:
nothing flows into the initial states, and Caffe's forget-gate derivative f (1 - f), taken with
f already scaled by cont, is the true one when cont is 1 (t >= 1) or when cont_0 is 0 or 1 (a
fractional cont_0 would differ, hence the LSTM condition). The static term enters as extra input
features, the same at every step, with extra columns of W_x: x_static with W_static, or, with
fewer streams than static features, a one-hot of the stream with the terms W_static x_static
(cheaper for the kernel; exact for finite values, as the other products are by zero). The check
reads cont on the host (on CUDA one wait for the device, repeated only when cont changes); when
every cont_0 is 0 the kernel starts from zeros, when every one is 1 from the carried states as
they are, without a product by cont_0. Otherwise (a reset at
t >= 1, a fractional LSTM cont_0, or while a CUDA graph is being captured, where that wait is
illegal) the loop path runs. The kernels sum in another order than the loop (and oneDNN uses
its own activation code), so in float32 the two paths may differ in the last bits. When cuDNN
runs the kernel, RNN and LSTM hand it their weights (LSTM's reordered) in one buffer of its layout;
with a static input, whose weights are joined per call, torch warns that they "are not part of
single contiguous chunk of memory", and that warning is silenced around the call.

Backward follows the unrolled net exactly: the diffs of x and x_static are always written and
the parameter diffs always accumulate (Caffe's unrolled net runs its backward unconditionally);
nothing flows into cont, h0/c0, or from the diffs of the hT/cT tops. The fused path keeps its
autograd graph until the next forward (so backward may run twice) only when ``_need_backward``
is True (the net sets it False for layers it never backpropagates). ``debug_info`` logs the
mean absolute value of the outputs, states and diffs (Caffe logs its unrolled net's blobs).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence

import torch

from caffe._common import LOG, STATE, recorded
from caffe._layers.base import refuse_backward
from caffe.blob import Blob
from caffe.errors import BlobCountError, LayerSetupError, ShapeMismatchError
from caffe.fillers import fill
from caffe.layer import Layer
from caffe.proto import caffe_pb2

Acts = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
#: (destination pieces, source pieces) of a foreach copy
Copies = tuple[list[torch.Tensor], list[torch.Tensor]]

#: torch's warning on CUDA about weights that are not one flat buffer
_NOT_ONE_CHUNK = "RNN module weights are not part of single contiguous chunk of memory"
_NO_CONTEXT = contextlib.nullcontext()


@contextlib.contextmanager
def _compaction_quiet():
    """torch's warning about weights it compacts silenced (they are Caffe's separate blobs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NOT_ONE_CHUNK)
        yield


# ---------------------------------------------------------------------------------- LSTM cell
def lstm_cell_forward(c_prev: torch.Tensor, gates: torch.Tensor,
                      cont: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Acts]:
    """One LSTM step on gate pre-activations ``gates`` (..., 4D) ordered i, f, o, g.

    i, o = sigmoid; f = cont * sigmoid (0 where cont is 0); g = tanh;
    c = f * c_prev + i * g; h = o * tanh(c). ``cont`` broadcasts against (..., D).
    Returns c, h and the activations (i, f, o, g, tanh(c)) the backward needs."""
    i, f, o, g = lstm_gates(gates, cont)
    c = f * c_prev + i * g
    tanh_c = torch.tanh(c)
    return c, o * tanh_c, (i, f, o, g, tanh_c)


def lstm_gates(gates: torch.Tensor, cont: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The activated gates i, f (times cont; exactly 0 where cont is 0, as Caffe's branch, even
    for a NaN pre-activation), o, g of pre-activations (..., 4D)."""
    d = gates.shape[-1] // 4
    sig = torch.sigmoid(gates[..., :3 * d])
    forget = (sig[..., d:2 * d] * cont).masked_fill(cont == 0, 0)
    return sig[..., :d], forget, sig[..., 2 * d:], torch.tanh(gates[..., 3 * d:])


def lstm_cell_backward(dc: torch.Tensor, dh: torch.Tensor, c_prev: torch.Tensor,
                       acts: Acts) -> tuple[torch.Tensor, torch.Tensor]:
    """Diffs of c_prev and of the gate pre-activations (..., 4D) from the diffs of c and h.

    As Caffe, the forget-gate derivative is taken as f (1 - f) with f already scaled by cont."""
    i, f, o, g, tanh_c = acts
    dc_total = dc + dh * o * (1 - tanh_c * tanh_c)
    dgates = torch.cat([dc_total * g * i * (1 - i),
                        dc_total * c_prev * f * (1 - f),
                        dh * tanh_c * o * (1 - o),
                        dc_total * i * (1 - g * g)], dim=-1)
    return dc_total * f, dgates


def _cudnn_kernel(t: torch.Tensor) -> bool:
    """Whether the fused kernel may run on cuDNN for ``t``'s device and dtype: only when
    ``caffe.set_precision`` is not "float32". cuDNN's float32 RNN and LSTM kernels are less
    exact than float32 arithmetic: measured on an H100 against float64, errors of 5e-6 to 3e-5
    on values of order 1 (the conformance tolerance is 1e-5), where torch's native CUDA kernels
    and the loop stay within 6e-7. Under "float32" the native kernels run instead."""
    return t.is_cuda and STATE.precision != "float32" and torch.backends.cudnn.is_acceptable(t)


def cudnn_flattenable(t: torch.Tensor) -> bool:
    """Whether the fused kernel runs on cuDNN for ``t`` with weights that may share one
    buffer in cuDNN's layout."""
    return _cudnn_kernel(t) and torch._use_cudnn_rnn_flatten_weight()


@contextlib.contextmanager
def _native_kernels():
    """torch's native CUDA recurrent kernels instead of cuDNN's for the calls inside."""
    enabled = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = False
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = enabled


def kernel_precision(x: torch.Tensor,
                     compacted: bool = False) -> contextlib.AbstractContextManager:
    """Around a ``torch.lstm`` / ``torch.rnn_tanh`` call on ``x`` (the layers' fused path, and
    the benchmark's twins): on CUDA, cuDNN off unless ``_cudnn_kernel`` allows it; with cuDNN
    and weights it ``compacted`` (not one buffer), torch's warning about that silenced."""
    if not x.is_cuda:
        return _NO_CONTEXT
    if not _cudnn_kernel(x):
        return _native_kernels()
    return _compaction_quiet() if compacted else _NO_CONTEXT


def _stale(key: list[torch.Tensor] | None, tensors: list[torch.Tensor]) -> bool:
    """Whether what was made from the tensors ``key`` (views, copies) was not made from
    ``tensors``: a blob's tensor replaced, or first use."""
    return key is None or len(key) != len(tensors) or any(a is not b for a, b in zip(key, tensors))


# ---------------------------------------------------------------------------------- layer base
class RecurrentLayer(Layer):
    """Base of RNN and LSTM: parameter layout, shapes, carried state and the input transform.

    Parameter blobs, in Caffe's order: W_x (G, K), b (G,), [W_static (G, K_static)],
    W_h (G, num_output), then the subclass's extra blobs; G = ``gate_mult * num_output``.
    Subclasses define ``state_names``, ``gate_mult``, ``extra_blob_specs``, ``recur``,
    ``recur_backward`` and ``recur_fused``."""

    #: the state carried from one forward to the next is Python-side: a CUDA graph's replay
    #: would keep reading the state of its capture (``Net.use_cuda_graph``)
    graph_safe = False
    #: names of the recurrent states, in the order of the exposed bottoms and tops
    state_names: tuple[str, ...] = ("h",)
    #: width of the pre-activation in units of num_output
    gate_mult = 1
    min_bottom_blobs = 2
    min_top_blobs = 1
    no_force_backward_bottoms = (1,)
    writes_unrequested_diffs = True  # x (and static) diffs whenever the params learn
    #: whether the fused path needs every cont_0 to be 0 or 1 (LSTM: see the module docstring)
    fused_needs_binary_cont0 = False
    #: private switch: False always takes the loop path (tests compare the two)
    _fused_allowed = True
    #: whether the fused kernel takes the parameter rows in another order than Caffe's
    reorders_rows = False
    #: the kernel's mode for cuDNN's weight layout
    cudnn_mode = "RNN_TANH"

    # ------------------------------------------------------------------ subclass hooks
    def extra_blob_specs(self) -> list[tuple[tuple[int, ...], caffe_pb2.FillerParameter]]:
        """Shapes and fillers of the parameter blobs after W_h."""
        return []

    def recur(self, wx: torch.Tensor, cont: torch.Tensor,
              states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], object]:
        """Run the T steps from pre-activation inputs ``wx`` (T, N, G) (input transform, bias
        and static term included), cont (T, N, 1) and initial states (N, D) each. Returns the
        output (T, N, D), the final states and what ``recur_backward`` needs."""
        raise NotImplementedError

    def recur_backward(self, dy: torch.Tensor, cont: torch.Tensor,
                       cache: object) -> tuple[torch.Tensor, torch.Tensor]:
        """From the output diff (T, N, D): accumulate the subclass's extra parameter diffs and
        return the diffs of the pre-activations (T, N, G) and the gated previous hidden
        states cont_t * h_{t-1} (T, N, D) they multiplied W_h with."""
        raise NotImplementedError

    def recur_fused(self, x: torch.Tensor, w_ih: torch.Tensor, params: list[torch.Tensor],
                    states: list[torch.Tensor],
                    train: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The T steps in one call of torch's recurrent kernel, from the inputs x (T, N, K')
        and their weights w_ih (G, K') (the static input already joined), the parameter
        tensors in blob order (``params[1]`` is b, ``params[2 + static]`` W_h, then the extra
        blobs) and the initial states (1, N, D) each, already multiplied by cont_0. ``train``
        is whether autograd records. Returns the output (T, N, D) and the final states
        (1, N, D) each."""
        raise NotImplementedError

    # ------------------------------------------------------------------ setup
    def _where(self) -> str:
        return f"Layer '{self.name}' ({self.type})"

    def setup(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        p = self.layer_param.recurrent_param
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            raise LayerSetupError(f"{self._where()}: recurrent_param.num_output must be "
                                  f"positive, got {p.num_output}")
        self.expose_hidden = bool(p.expose_hidden)
        self.debug_info = bool(p.debug_info)
        n_hidden = len(self.state_names) if self.expose_hidden else 0
        self._check_counts(bottom, top, n_hidden)
        self.static_input = len(bottom) > 2 + n_hidden
        x = bottom[0]
        self._check_x(x)
        self.T, self.N = x.shape[0], x.shape[1]
        self._check_cont(bottom[1])
        self.K = x.count_range(2)
        if self.static_input:
            xs = bottom[2]
            if xs.num_axes < 1 or xs.shape[0] != self.N:
                raise LayerSetupError(
                    f"{self._where()}: the static input (bottom[2]) must have shape (N, ...) with "
                    f"N = {self.N} streams, got {xs.shape}")
            self.K_static = xs.count_range(1)
        self._saved: list[torch.Tensor | None] = [None] * len(self.state_names)
        self._cache: object = None
        self._fused_last = False
        self._fused_graph: tuple[torch.Tensor, list[torch.Tensor]] | None = None
        self._cont_key: tuple | None = None  # cont's data_version at the last device check
        self._cont_tensor: torch.Tensor | None = None  # and its tensor
        self._plan: str | None = None  # the fused plan found then
        self._zero_bias: torch.Tensor | None = None  # the kernels' second bias (Caffe has one)
        self._one_buffer = False  # whether the kernel's weights are one cuDNN buffer
        self._zero_state: torch.Tensor | None = None
        self._param_key: list[torch.Tensor] | None = None  # the blob tensors _params are for
        self._param_precision = ""  # the set_precision choice _params are laid out for
        self._diff_key: list[torch.Tensor] | None = None  # the diffs _diff_pieces are of
        if self.blobs:
            return
        g = self.gate_mult * self.num_output
        specs = [((g, self.K), p.weight_filler), ((g,), p.bias_filler)]
        if self.static_input:
            specs.append(((g, self.K_static), p.weight_filler))
        specs.append(((g, self.num_output), p.weight_filler))
        specs.extend(self.extra_blob_specs())
        for shape, filler in specs:
            fill(self.blobs.add_blob(*shape), filler)

    def _check_counts(self, bottom: Sequence[Blob], top: Sequence[Blob], n_hidden: int) -> None:
        lp = self.layer_param
        lo = 2 + n_hidden
        hidden = "".join(f", {s}0" for s in self.state_names) if n_hidden else ""
        if not lo <= len(bottom) <= lo + 1:
            raise BlobCountError(
                f"{self._where()} takes {lo} or {lo + 1} bottom blobs (x, cont, [x_static]"
                f"{hidden}), got {len(bottom)}: {list(lp.bottom)}")
        if len(top) != 1 + n_hidden:
            outs = "".join(f", {s}T" for s in self.state_names) if n_hidden else ""
            raise BlobCountError(
                f"{self._where()} takes {1 + n_hidden} top blobs (output{outs}), got "
                f"{len(top)}: {list(lp.top)}")

    def _check_x(self, x: Blob) -> None:
        if x.num_axes < 2:
            raise LayerSetupError(f"{self._where()}: bottom[0] must have at least 2 axes "
                                  f"(timesteps, streams, ...), got shape {x.shape}")

    def _check_cont(self, cont: Blob) -> None:
        if cont.shape != (self.T, self.N):
            raise LayerSetupError(
                f"{self._where()}: bottom[1] (cont) must have shape (T, N) = "
                f"({self.T}, {self.N}), got {cont.shape}")

    # ------------------------------------------------------------------ reshape
    def batch_axis_of(self, i: int) -> int:
        """x, cont and the exposed states are time-major (``T x N x ...``, ``1 x N x D``);
        the static input is ``N x ...``."""
        return 0 if self.static_input and i == 2 else 1

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        x = bottom[0]
        self._check_x(x)
        if x.shape[0] != self.T:
            raise LayerSetupError(
                f"{self._where()}: the number of timesteps changed from {self.T} to "
                f"{x.shape[0]} (bottom[0] shape {x.shape}); it is fixed at setup")
        self.N = x.shape[1]
        if math.prod(x.shape[2:]) != self.K:
            raise ShapeMismatchError(
                f"{self._where()}: bottom[0] {x.shape} has {math.prod(x.shape[2:])} features "
                f"per step, the weights expect {self.K}")
        self._check_cont(bottom[1])
        if self.static_input:
            xs = bottom[2]
            if xs.num_axes < 1 or xs.shape[0] != self.N or xs.count_range(1) != self.K_static:
                raise ShapeMismatchError(
                    f"{self._where()}: the static input must have shape ({self.N}, ...) with "
                    f"{self.K_static} features, got {xs.shape}")
        state_shape = (1, self.N, self.num_output)
        if self.expose_hidden:
            first = 2 + self.static_input
            for name, b in zip(self.state_names, bottom[first:]):
                if b.shape != state_shape:
                    raise ShapeMismatchError(
                        f"{self._where()}: the initial state {name}0 must have shape "
                        f"{state_shape}, got {b.shape}")
        top[0].reshape(self.T, self.N, self.num_output)
        for t in top[1:]:
            t.reshape(state_shape)

    # ------------------------------------------------------------------ forward / backward
    def _initial_states(self, bottom: Sequence[Blob], like: torch.Tensor) -> list[torch.Tensor]:
        n, d = self.N, self.num_output
        if self.expose_hidden:
            first = 2 + self.static_input
            return [b.tensor.reshape(n, d).to(like.dtype) for b in bottom[first:]]
        # Caffe keeps the last states in blobs that only grow: a smaller batch reads a prefix
        # of the stored values, a larger one starts from zeros.
        states = []
        for buf in self._saved:
            if buf is None or buf.numel() < n * d:
                states.append(like.new_zeros(n, d))
            else:
                states.append(buf[:n * d].to(like).view(n, d))
        return states

    def _save_states(self, states: list[torch.Tensor]) -> None:
        # nothing writes to a saved state or to a final state in place (earlier states may
        # still be cached for a backward): a larger saved state is updated in a copy
        for k, s in enumerate(states):
            flat = s.reshape(-1)
            buf = self._saved[k]
            if buf is not None and buf.numel() > flat.numel():
                buf = buf.to(flat).clone()
                buf[:flat.numel()] = flat
            else:
                buf = flat
            self._saved[k] = buf

    def reset(self) -> None:
        """Zero the carried hidden state (Caffe's RecurrentLayer::Reset)."""
        self._saved = [None if b is None else torch.zeros_like(b) for b in self._saved]

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        b = self.blobs
        w_static = b[2].tensor if self.static_input else None
        return b[0].tensor, b[1].tensor, w_static, b[2 + self.static_input].tensor

    def _fused_plan(self, bottom: Sequence[Blob]) -> str | None:
        """Whether the fused path computes what Caffe does (see the module docstring): None
        when not, else what cont_0 holds: "zero" (every sequence starts afresh), "one" (every
        sequence goes on) or "mixed". The answer depends on cont's values: read from a host copy
        when there is one, else copied from the device (a wait for it) unless cont is unchanged
        since the last forward."""
        blob = bottom[1]
        if not self._fused_allowed or bottom[0].count == 0 or recorded(blob._t):
            return None
        cont = blob.host_tensor()
        if cont is not None:
            return self._cont_plan(cont)
        # the tensor is part of the key, and kept: a new tensor at a freed address starts at the
        # same version, so the address and version alone could match a stale plan
        key = blob.data_version()
        if key is None or key != self._cont_key or blob.tensor is not self._cont_tensor:
            self._plan = self._cont_plan(blob.tensor.cpu())
            self._cont_key, self._cont_tensor = key, blob.tensor
        return self._plan

    def _cont_plan(self, cont: torch.Tensor) -> str | None:
        c = cont.numpy() if cont.dtype in (torch.float32, torch.float64) else cont.double().numpy()
        if not (c[1:] == 1).all():
            return None
        zero, one = c[0] == 0, c[0] == 1
        if zero.all():
            return "zero"
        if one.all():
            return "one"
        if self.fused_needs_binary_cont0 and not (zero | one).all():
            return None
        return "mixed"

    def forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        self._cache = self._fused_graph = None  # what the last backward needed
        plan = self._fused_plan(bottom)
        self._fused_last = plan is not None
        y, final = (self._forward_fused(bottom, plan) if self._fused_last
                    else self._forward_loop(bottom))
        top[0].tensor = y
        if self.expose_hidden:
            for t, s in zip(top[1:], final):
                t.tensor = s.reshape(t.shape).clone()
        else:
            self._save_states(final)
        if self.debug_info:
            self._log("Forward", "output data", y)
            for name, s in zip(self.state_names, final):
                self._log("Forward", f"final {name} data", s)

    def _forward_loop(self, bottom: Sequence[Blob]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        t_, n = self.T, self.N
        x2 = bottom[0].tensor.reshape(t_ * n, self.K)
        w_x, b_x, w_static, _ = self._weights()
        wx = torch.addmm(b_x, x2, w_x.t()).view(t_, n, -1)
        if self.static_input:
            wx = wx + (bottom[2].tensor.reshape(n, self.K_static) @ w_static.t())
        cont = bottom[1].tensor.to(wx.dtype).view(t_, n, 1)
        states = self._initial_states(bottom, wx)
        y, final, self._cache = self.recur(wx, cont, states)
        return y, final

    def _forward_fused(self, bottom: Sequence[Blob],
                       plan: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        t_, n = self.T, self.N
        record = self._need_backward
        inputs = [bottom[0].tensor] + ([bottom[2].tensor] if self.static_input else [])
        if record:
            inputs = [v.detach().requires_grad_(True) for v in inputs]
        params = self._fused_params()
        with torch.set_grad_enabled(record):
            x = inputs[0].reshape(t_, n, self.K)
            w_ih = params[0]
            if self.static_input:
                feat, w_feat = self._static_features(inputs[1], params[2])
                x = torch.cat([x, feat.expand(t_, n, -1)], 2)
                w_ih = torch.cat([w_ih, w_feat], 1)
            states = self._fused_initial_states(bottom, x, plan)
            with kernel_precision(x, compacted=not self._one_buffer):
                y, final = self.recur_fused(x, w_ih, params, states, record)
        if not record:
            return y, final
        self._fused_graph = (y, inputs + params)
        # a fresh top: layers downstream may change it in place, the graph may need y
        return y.detach().clone(), [s.detach() for s in final]

    def _fused_params(self) -> list[torch.Tensor]:
        """The parameter tensors the fused kernel takes, in blob order: autograd's leaves
        (kept while the blobs keep their tensors), whose gradients ``_add_param_grads`` adds
        to the diffs. Buffers are refilled from the blobs by one foreach copy."""
        blobs = [b.tensor for b in self.blobs]
        if _stale(self._param_key, blobs) or self._param_precision != STATE.precision:
            self._params, self._copies = self._kernel_params(blobs)
            self._param_key, self._param_precision = blobs, STATE.precision
        if self._copies[0]:
            with torch.no_grad():
                torch._foreach_copy_(*self._copies)
        return self._params

    def _kernel_params(self, blobs: list[torch.Tensor]) -> tuple[list[torch.Tensor], Copies]:
        """New leaves for the parameter blobs, and the pieces to copy from the blobs into them
        at every forward: a leaf is a buffer when the kernel takes the blob's rows in another
        order (``row_pieces``) or when cuDNN runs the kernel (on CUDA, without a static input,
        whose weights are joined per call); else it aliases the blob. For cuDNN, W_x, W_h, b
        and a zero second bias become views of one buffer in cuDNN's layout, as nn.LSTM's
        ``flatten_parameters`` makes its weights: torch then hands that buffer to cuDNN as it
        is, instead of compacting the weights into a new one at every call."""
        w_h = 2 + self.static_input
        zero = torch.zeros_like(blobs[1])
        flat = not self.static_input and cudnn_flattenable(zero)
        copied = range(len(blobs)) if self.reorders_rows else (0, 1, w_h) if flat else ()
        params = [torch.empty_like(t) if i in copied else t.detach() for i, t in enumerate(blobs)]
        if flat:
            from torch.backends.cudnn import rnn as cudnn_rnn
            with torch.no_grad(), torch.cuda.device_of(zero):
                torch._cudnn_rnn_flatten_weight(
                    [params[0], params[w_h], params[1], zero], 4, self.K,
                    cudnn_rnn.get_cudnn_mode(self.cudnn_mode), self.num_output, 0, 1, False,
                    False)
        self._zero_bias = zero
        self._one_buffer = flat
        copies = (self.row_pieces([params[i] for i in copied], False),
                  self.row_pieces([blobs[i] for i in copied], True))
        return [p.requires_grad_(True) for p in params], copies

    def row_pieces(self, tensors: list[torch.Tensor], swap: bool) -> list[torch.Tensor]:
        """Pieces of parameter-shaped tensors: paired piece by piece, a plain list and a
        ``swap`` one take Caffe's row order to the kernel's and back. The tensors themselves
        where the two orders agree (RNN)."""
        return list(tensors)

    def _add_param_grads(self, grads: Sequence[torch.Tensor]) -> None:
        """Accumulate the gradients of the ``_fused_params`` leaves into the parameter diffs."""
        diffs = [b.diff_tensor for b in self.blobs]
        if _stale(self._diff_key, diffs):
            self._diff_pieces = self.row_pieces(diffs, False)
            self._diff_key = diffs
        torch._foreach_add_(self._diff_pieces, self.row_pieces(list(grads), True))

    def _fused_initial_states(self, bottom: Sequence[Blob], like: torch.Tensor,
                              plan: str) -> list[torch.Tensor]:
        """The initial states (1, N, D) each, already multiplied by cont_0: zeros kept between
        forwards when every cont_0 is 0, the states themselves when every one is 1."""
        n, d = self.N, self.num_output
        if plan == "zero":
            zeros = self._zero_state
            if (zeros is None or zeros.shape[1] != n or zeros.dtype != like.dtype
                    or zeros.device != like.device):
                zeros = self._zero_state = like.new_zeros(1, n, d)
            return [zeros] * len(self.state_names)
        states = [s.view(1, n, d) for s in self._initial_states(bottom, like)]
        if plan == "one" and not self.expose_hidden:  # h0/c0 bottoms may be rewritten by NumPy
            return states                             # before the backward: the kernel keeps hx
        cont0 = bottom[1].tensor[0].to(like.dtype).view(1, n, 1)
        return [cont0 * s for s in states]

    def _static_features(self, xs: torch.Tensor,
                         w_static: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Extra input features (N, r), the same at every step, and their weight columns
        (G, r) whose product is the static term W_static x_static (N, G): x_static itself
        (r = K_static), or, when there are fewer streams, a one-hot of the stream and the
        static terms themselves (r = N), which costs the kernel less."""
        n = self.N
        xs = xs.reshape(n, self.K_static)
        if n < self.K_static:
            eye = torch.eye(n, dtype=xs.dtype, device=xs.device)
            return eye, (xs @ w_static.t()).t()
        return xs, w_static

    def backward(self, top: Sequence[Blob], propagate_down: Sequence[bool],
                 bottom: Sequence[Blob]) -> None:
        refuse_backward(self, propagate_down, {1: "sequence continuation (cont)"})
        if self._fused_last:
            self._backward_fused(top, bottom)
        else:
            self._backward_loop(top, bottom)
        if self.debug_info:
            self._log("Backward", "x diff", bottom[0].diff_tensor)
            for j, p in enumerate(self.blobs):
                self._log("Backward", f"param blob {j} diff", p.diff_tensor)

    def _backward_fused(self, top: Sequence[Blob], bottom: Sequence[Blob]) -> None:
        if self._fused_graph is None:
            raise LayerSetupError(
                f"{self._where()}: backward() after a forward run with _need_backward = False "
                "(a net that plans no backward through this layer), which keeps nothing for a "
                "backward; set layer._need_backward = True and run forward again")
        y, leaves = self._fused_graph
        grads = torch.autograd.grad(y, leaves, top[0].diff_tensor.to(y.dtype),
                                    retain_graph=True)
        n_in = 1 + self.static_input
        for j, g in zip((0, 2), grads[:n_in]):
            bottom[j].diff_tensor = g
        self._add_param_grads(grads[n_in:])

    def _backward_loop(self, top: Sequence[Blob], bottom: Sequence[Blob]) -> None:
        t_, n, d = self.T, self.N, self.num_output
        cont = bottom[1].tensor.to(top[0].diff_tensor.dtype).view(t_, n, 1)
        da, h_gated = self.recur_backward(top[0].diff_tensor, cont, self._cache)
        da2 = da.reshape(t_ * n, -1)
        w_x, _, w_static, _ = self._weights()
        blobs = self.blobs
        x2 = bottom[0].tensor.reshape(t_ * n, self.K)
        blobs[0].diff_tensor.addmm_(da2.t(), x2)
        blobs[1].diff_tensor.add_(da2.sum(0))
        blobs[2 + self.static_input].diff_tensor.addmm_(da2.t(), h_gated.reshape(t_ * n, d))
        bottom[0].diff_tensor = (da2 @ w_x).view(bottom[0].shape)
        if self.static_input:
            da_static = da.sum(0)
            xs2 = bottom[2].tensor.reshape(n, self.K_static)
            blobs[2].diff_tensor.addmm_(da_static.t(), xs2)
            bottom[2].diff_tensor = (da_static @ w_static).view(bottom[2].shape)

    def _log(self, stage: str, what: str, t: torch.Tensor) -> None:
        value = float(t.abs().mean()) if t.numel() else 0.0
        LOG.info("    [%s] Layer %s (recurrent), %s: %g", stage, self.name, what, value)
