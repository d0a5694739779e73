"""The fused path of LSTM and RNN (one ``torch.lstm`` / ``torch.rnn_tanh`` call) against the
loop over time it replaces: same tops, bottom diffs and accumulated parameter diffs, in float64,
across static input, exposed states, cont_0 patterns, T = 1 and state carried between forwards.
Every comparison also asserts which path each layer took, so a fused path that silently fell
back to the loop (or computed something else) fails."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe._common import LOG, STATE
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.net import create_layer
from caffe.proto import caffe_pb2
from caffe.testing.gradient_check import GradientChecker

TYPES = ["LSTM", "RNN"]
K, D = 3, 4



def _propagate(bottom) -> list[bool]:
    """Every bottom but cont (bottom 1), into which Caffe refuses to backpropagate."""
    return [i != 1 for i in range(len(bottom))]

def _layer(type_name: str, *, static: bool, expose: bool, debug: bool = False):
    lp = caffe_pb2.LayerParameter(name="rec", type=type_name)
    text_format.Merge(
        f"recurrent_param {{ num_output: {D} weight_filler {{ type: 'gaussian' std: 0.5 }} "
        f"bias_filler {{ type: 'gaussian' std: 0.3 }} expose_hidden: {str(expose).lower()} "
        f"debug_info: {str(debug).lower()} }}", lp)
    n_states = (2 if type_name == "LSTM" else 1) if expose else 0
    lp.bottom.extend(["x", "cont"] + ["xs"] * static + [f"s{i}" for i in range(n_states)])
    lp.top.extend(["y"] + [f"t{i}" for i in range(n_states)])
    return create_layer(lp, caffe.TRAIN)


def _device() -> torch.device:
    """Where blobs live in the current mode (the GPU under NEOCAFFE_TEST_DEVICE=cuda)."""
    return STATE.device


def _tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(a).to(_device(), dtype)


def _blob(a: np.ndarray, dtype: torch.dtype = torch.float64) -> Blob:
    b = Blob(*a.shape, dtype=dtype)
    b.tensor.copy_(torch.from_numpy(np.asarray(a, dtype=np.float64)))
    return b


def _bottoms(rng: np.random.Generator, layer, cont: np.ndarray, k_static: int = 0,
             dtype: torch.dtype = torch.float64) -> list[Blob]:
    t, n = cont.shape
    arrays = [rng.uniform(-1, 1, (t, n, K)), cont]
    if k_static:
        arrays.append(rng.uniform(-1, 1, (n, k_static)))
    n_states = len(layer.layer_param.top) - 1
    arrays.extend(rng.uniform(-1, 1, (1, n, D)) for _ in range(n_states))
    return [_blob(a, dtype) for a in arrays]


class _Spy:
    """Counts the calls of one of a layer's path methods (an instance attribute wrapper)."""

    def __init__(self, layer, name: str) -> None:
        self.calls = 0
        method = getattr(layer, name)

        def wrapped(*args, **kwargs):
            self.calls += 1
            return method(*args, **kwargs)
        setattr(layer, name, wrapped)


class _Pair:
    """The same layer twice, with equal parameters: ``fused`` as shipped, ``loop`` forced onto
    the loop path. Each method runs both and compares."""

    def __init__(self, type_name: str, *, k_static: int = 0, expose: bool = False,
                 dtype: torch.dtype = torch.float64, debug: bool = False) -> None:
        self.k_static, self.static, self.dtype = k_static, bool(k_static), dtype
        self.fused = _layer(type_name, static=self.static, expose=expose, debug=debug)
        self.loop = _layer(type_name, static=self.static, expose=expose, debug=debug)
        self.loop._fused_allowed = False
        self.fused_spy = (_Spy(self.fused, "recur_fused"), _Spy(self.fused, "recur"))
        self.loop_spy = (_Spy(self.loop, "recur_fused"), _Spy(self.loop, "recur"))
        self.tops: dict = {}
        self.set_up = False

    def forward(self, rng: np.random.Generator, cont: np.ndarray, fused: bool = True):
        """Forward both on the same bottoms; check the tops and the path each layer took."""
        seed = int(rng.integers(1 << 30))
        before = [s.calls for s in self.fused_spy]
        for layer in (self.fused, self.loop):
            bottom = _bottoms(np.random.default_rng(seed), layer, cont, self.k_static,
                              self.dtype)
            top = [Blob(dtype=self.dtype) for _ in layer.layer_param.top]
            if not self.set_up:
                layer.SetUp(bottom, top)
                if layer is self.fused:
                    for p in layer.blobs:
                        p.tensor = p.tensor.to(self.dtype)
                else:
                    for p, q in zip(layer.blobs, self.fused.blobs):
                        p.tensor = q.tensor.clone()
            layer.Forward(bottom, top)
            self.tops[id(layer)] = (bottom, top)
        self.set_up = True
        calls = [s.calls - b for s, b in zip(self.fused_spy, before)]
        assert calls == ([1, 0] if fused else [0, 1]), f"fused/loop calls {calls}"
        assert self.loop_spy[0].calls == 0
        for a, b in zip(self.tops[id(self.fused)][1], self.tops[id(self.loop)][1]):
            torch.testing.assert_close(a.tensor, b.tensor)
        return self.tops[id(self.fused)]

    def backward(self, rng: np.random.Generator, times: int = 1) -> None:
        """Backward both from the same top diff (over pre-filled bottom and param diffs: the
        first must be overwritten, the second accumulated); compare every diff."""
        seed = int(rng.integers(1 << 30))
        for layer in (self.fused, self.loop):
            r = np.random.default_rng(seed)
            bottom, top = self.tops[id(layer)]
            for t in top:  # the hT/cT diffs must be ignored
                t.diff_tensor = _tensor(r.uniform(-1, 1, t.shape), self.dtype)
            for b in bottom:
                b.diff_tensor = torch.full(b.shape, 7.0, dtype=self.dtype, device=_device())
            if not self.set_up_diffs:
                for p in layer.blobs:
                    p.diff_tensor = _tensor(r.uniform(-1, 1, p.shape), self.dtype)
            for _ in range(times):
                layer.Backward(top, _propagate(bottom), bottom)
        self.set_up_diffs = True
        fb, lb = self.tops[id(self.fused)][0], self.tops[id(self.loop)][0]
        for j in [0, 2] if self.static else [0]:
            torch.testing.assert_close(fb[j].diff_tensor, lb[j].diff_tensor,
                                       msg=lambda m, j=j: f"bottom {j} diff: {m}")
        for j in range(1, len(fb)):
            if j != 2 or not self.static:  # nothing flows into cont or the initial states
                assert (fb[j].diff_tensor == 7).all(), f"bottom {j} diff was written"
        for j, (p, q) in enumerate(zip(self.fused.blobs, self.loop.blobs)):
            torch.testing.assert_close(p.diff_tensor, q.diff_tensor,
                                       msg=lambda m, j=j: f"param {j} diff: {m}")

    set_up_diffs = False


CONT0 = {"zeros": [0, 0, 0], "ones": [1, 1, 1], "mixed": [1, 0, 1]}


@pytest.mark.parametrize("t", [1, 3])
@pytest.mark.parametrize("cont0", list(CONT0))
@pytest.mark.parametrize("expose", [False, True], ids=["carried", "expose"])
# N = 3 streams: 2 static features enter as they are, 5 through a one-hot of the stream
@pytest.mark.parametrize("k_static", [0, 2, 5], ids=["plain", "static2", "static5"])
@pytest.mark.parametrize("type_name", TYPES)
def test_fused_matches_loop(type_name, k_static, expose, cont0, t):
    rng = np.random.default_rng(5)
    pair = _Pair(type_name, k_static=k_static, expose=expose)
    cont = np.ones((t, 3))
    cont[0] = CONT0[cont0]
    pair.forward(rng, cont)
    pair.backward(rng)
    # again from the carried (or newly exposed) state, accumulating into the param diffs
    pair.forward(rng, cont)
    pair.backward(rng)


@pytest.mark.parametrize("type_name", TYPES)
def test_state_carried_across_batch_sizes(type_name):
    """Without expose_hidden the final state seeds the next forward; a smaller batch reads a
    prefix of it, a larger one past the stored size starts from zeros (as the loop does)."""
    rng = np.random.default_rng(6)
    pair = _Pair(type_name)
    for n in [3, 2, 3, 4, 1]:
        cont = np.ones((3, n))
        pair.forward(rng, cont)
        pair.backward(rng)


@pytest.mark.parametrize("type_name", TYPES)
def test_backward_twice_after_one_forward(type_name):
    rng = np.random.default_rng(7)
    pair = _Pair(type_name, k_static=3)
    pair.forward(rng, np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]]))
    pair.backward(rng, times=2)


@pytest.mark.parametrize("type_name", TYPES)
def test_top_changed_in_place_downstream(type_name):
    """An in-place layer above (Dropout, ReLU) may rewrite the top before the backward: the
    fused graph must not depend on the top's memory."""
    rng = np.random.default_rng(8)
    pair = _Pair(type_name)
    pair.forward(rng, np.ones((3, 2)))
    for layer in (pair.fused, pair.loop):
        pair.tops[id(layer)][1][0].tensor.mul_(3.0)
    pair.backward(rng)


@pytest.mark.parametrize("type_name", TYPES)
def test_parameter_writes_between_forwards_are_seen(type_name):
    """The fused path keeps views of the parameter tensors between forwards (LSTM: buffers
    in torch's gate order): in-place writes (a solver's update, NumPy), a replaced tensor, and
    replaced diffs must all reach the next forward and backward."""
    rng = np.random.default_rng(16)
    pair = _Pair(type_name, k_static=2)
    cont = np.array([[0.0, 1.0], [1.0, 1.0]])
    pair.forward(rng, cont)
    pair.backward(rng)
    writes = [lambda b: b.tensor.mul_(0.5),                          # a solver's update
              lambda b: b.data.__setitem__(Ellipsis, b.data * -1.5),  # NumPy
              lambda b: setattr(b, "tensor", b.tensor + 0.25),        # a new tensor
              lambda b: setattr(b, "diff_tensor", b.diff_tensor.clone())]
    for write in writes:
        for layer in (pair.fused, pair.loop):
            for blob in layer.blobs:
                write(blob)
        pair.forward(rng, cont)
        pair.backward(rng)


@pytest.mark.parametrize("type_name", TYPES)
def test_weights_for_cudnn_share_one_buffer(type_name, monkeypatch):
    """On CUDA the kernel's weights W_x, W_h, b (LSTM's reordered) and the zero second bias
    are made views of one buffer in cuDNN's layout by torch's flatten op (tests/gpu checks
    the real one). Emulated on the CPU: the copies into the buffers must be set up after the
    flattening moved them, or the kernel would read stale weights and the results would
    differ from the loop's."""
    from torch.backends.cudnn import rnn as cudnn_rnn

    from caffe._layers.recurrent import recurrent_base

    calls = []

    def flatten(weights, stride0, input_size, mode, hidden, proj, layers, batch_first, bidir):
        calls.append((stride0, input_size, hidden, mode, [tuple(w.shape) for w in weights]))
        flat = torch.zeros(sum(w.numel() for w in weights), dtype=weights[0].dtype,
                           device=weights[0].device)
        offset = 0
        for w in weights:
            flat[offset:offset + w.numel()] = w.reshape(-1)
            w.set_(flat.untyped_storage(), offset, w.shape, w.stride())
            offset += w.numel()
        return flat

    monkeypatch.setattr(recurrent_base, "cudnn_flattenable", lambda t: True)
    monkeypatch.setattr(torch, "_cudnn_rnn_flatten_weight", flatten)
    monkeypatch.setattr(cudnn_rnn, "get_cudnn_mode", lambda mode: mode)
    rng = np.random.default_rng(17)
    pair = _Pair(type_name)
    for _ in range(2):
        pair.forward(rng, np.array([[0.0, 1.0], [1.0, 1.0]]))
        pair.backward(rng)
    g = 4 * D if type_name == "LSTM" else D
    mode = "LSTM" if type_name == "LSTM" else "RNN_TANH"
    assert calls == [(4, K, D, mode, [(g, K), (g, D), (g,), (g,)])]
    layer = pair.fused
    kernel = [layer._params[i] for i in (0, 1, 2)] + [layer._zero_bias]
    assert len({t.untyped_storage().data_ptr() for t in kernel}) == 1
    assert not kernel[-1].any()


@pytest.mark.parametrize("type_name", TYPES)
def test_float32_paths_agree(type_name):
    rng = np.random.default_rng(9)
    pair = _Pair(type_name, k_static=3, dtype=torch.float32)
    pair.forward(rng, np.array([[0.0, 1.0, 1.0]] + [[1.0] * 3] * 4))
    pair.backward(rng)


@pytest.mark.parametrize("type_name", TYPES)
def test_fused_gradient_against_finite_differences(type_name):
    """The fused backward on its own, by Caffe's gradient checker (cont_0 = 0 so the state
    carried across the checker's many forwards never matters)."""
    layer = _layer(type_name, static=True, expose=False)
    spy = _Spy(layer, "recur")
    rng = np.random.default_rng(15)
    bottom = _bottoms(rng, layer, np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]), 3)
    top = [Blob(dtype=torch.float64)]
    GradientChecker(1e-2, 1e-3).check_gradient(layer, bottom, top, [0, 2])
    assert layer._fused_last and spy.calls == 0


# ---------------------------------------------------------------------------------- loop path
def _numpy_forward(layer, bottom: list[Blob]) -> np.ndarray:
    """Caffe's recurrence step by step in NumPy from zero initial states."""
    x, cont = bottom[0].data.astype(np.float64), bottom[1].data.astype(np.float64)
    p = [b.data.astype(np.float64) for b in layer.blobs]
    t_, n = cont.shape
    h = np.zeros((n, D))
    c = np.zeros((n, D))
    outs = []
    for t in range(t_):
        k = cont[t][:, None]
        a = x[t].reshape(n, -1) @ p[0].T + p[1] + (k * h) @ p[2].T
        if layer.type == "LSTM":
            sig = 1 / (1 + np.exp(-a[:, :3 * D]))
            i, f, o = sig[:, :D], k * sig[:, D:2 * D], sig[:, 2 * D:]
            c = f * c + i * np.tanh(a[:, 3 * D:])
            h = o * np.tanh(c)
            outs.append(h)
        else:
            h = np.tanh(a)
            outs.append(np.tanh(h @ p[3].T + p[4]))
    return np.stack(outs)


@pytest.mark.parametrize("type_name", TYPES)
def test_mid_sequence_reset_takes_the_loop(type_name):
    rng = np.random.default_rng(10)
    pair = _Pair(type_name)
    cont = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    bottom, top = pair.forward(rng, cont, fused=False)
    np.testing.assert_allclose(top[0].data, _numpy_forward(pair.fused, bottom), rtol=1e-10,
                               atol=1e-12)
    pair.backward(rng)


def test_fractional_first_cont():
    """A fractional cont_0 scales LSTM's forget gate, whose Caffe derivative f (1 - f) is then
    not the true one: LSTM loops; RNN (h_0 is only scaled) stays fused and exact."""
    rng = np.random.default_rng(11)
    cont = np.array([[0.5, 1.0], [1.0, 1.0]])
    for type_name, fused in [("LSTM", False), ("RNN", True)]:
        pair = _Pair(type_name)
        pair.forward(rng, np.ones((2, 2)))  # some state to scale
        pair.forward(rng, cont, fused=fused)
        pair.backward(rng)


@pytest.mark.parametrize("type_name", TYPES)
def test_path_choice_without_a_host_copy_follows_cont_writes(type_name, monkeypatch):
    """Where cont lives only on the device (as a GPU data layer leaves it), its values are read
    there once and the answer kept while cont is unchanged; an in-place write (a new torch
    version) or a NumPy write makes the layer look again."""
    monkeypatch.setattr(Blob, "host_tensor", lambda self: None)
    rng = np.random.default_rng(12)
    layer = _layer(type_name, static=False, expose=False)
    bottom = _bottoms(rng, layer, np.ones((3, 2)), dtype=torch.float32)
    top = [Blob()]
    layer.SetUp(bottom, top)
    fused, loop = _Spy(layer, "recur_fused"), _Spy(layer, "recur")
    reads = _Spy(layer, "_cont_plan")
    layer.Forward(bottom, top)
    layer.Forward(bottom, top)
    assert (fused.calls, loop.calls, reads.calls) == (2, 0, 1)
    bottom[1].tensor[1, 0] = 0  # a mid-sequence reset, written in place
    layer.Forward(bottom, top)
    assert (fused.calls, loop.calls, reads.calls) == (2, 1, 2)
    bottom[1].data[...] = 1
    layer.Forward(bottom, top)
    assert (fused.calls, loop.calls, reads.calls) == (3, 1, 3)


def test_host_tensor_is_the_cpu_data():
    b = Blob(2, 3)
    b.data[...] = 5
    assert b.host_tensor() is not None and float(b.host_tensor().sum()) == 30


# ---------------------------------------------------------------------------------- no backward
@pytest.mark.parametrize("type_name", TYPES)
def test_no_graph_without_need_backward(type_name):
    rng = np.random.default_rng(12)
    pair = _Pair(type_name, k_static=3)
    pair.fused._need_backward = False
    with torch.enable_grad():
        bottom, top = pair.forward(rng, np.ones((3, 2)))
    assert not top[0].tensor.requires_grad and top[0].tensor.grad_fn is None
    assert pair.fused._fused_graph is None and pair.fused._cache is None
    with pytest.raises(LayerSetupError, match="need_backward = False"):
        pair.fused.Backward(top, _propagate(bottom), bottom)


def test_net_layer_without_backward_keeps_no_graph():
    param = caffe_pb2.NetParameter()
    text_format.Merge("""
        layer { name: "in" type: "Input" top: "x" top: "cont"
                input_param { shape { dim: 3 dim: 2 dim: 3 } shape { dim: 3 dim: 2 } } }
        layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
                recurrent_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
    """, param)
    net = caffe.Net(param, caffe.TEST)
    net.blobs["x"].data[...] = np.random.default_rng(13).uniform(-1, 1, (3, 2, 3))
    net.blobs["cont"].data[...] = 1
    net.forward()
    layer = net.layer_dict["lstm"]
    assert not layer._need_backward
    assert layer._fused_last and layer._fused_graph is None
    assert not net.blobs["h"].tensor.requires_grad


# ---------------------------------------------------------------------------------- debug_info
@pytest.mark.parametrize("type_name", TYPES)
def test_debug_info_lines_match(type_name):
    rng = np.random.default_rng(14)
    pair = _Pair(type_name, debug=True)
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    level = LOG.level
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    try:
        pair.forward(rng, np.ones((2, 2)))
        pair.backward(rng)
    finally:
        LOG.removeHandler(handler)
        LOG.setLevel(level)
    lines = [m for m in lines if "rec (recurrent)" in m]
    # forward: fused then loop; backward: the same
    n_fwd, n_bwd = 1 + len(pair.fused.state_names), 1 + len(pair.fused.blobs)
    assert len(lines) == 2 * (n_fwd + n_bwd)
    assert lines[:n_fwd] == lines[n_fwd:2 * n_fwd]
    assert lines[2 * n_fwd:2 * n_fwd + n_bwd] == lines[2 * n_fwd + n_bwd:]
