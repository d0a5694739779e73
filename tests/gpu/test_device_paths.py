"""Code paths taken only on a GPU give what the CPU gives: the one-pass in-place affine of
BatchNorm (global statistics, with the Scale after it folded in) and of an in-place Scale, the
fused and looped recurrent layers; and the device paths of the label-reading layers never wait
for the device (CUDA's sync debug mode turns any wait into an error)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

BN_SCALE = """
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 4 dim: 3 dim: 5 dim: 5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data"
  batch_norm_param { use_global_stats: true } }
layer { name: "scale" type: "Scale" bottom: "data" top: "data"
  scale_param { bias_term: true } }
layer { name: "scale2" type: "Scale" bottom: "data" top: "data"
  scale_param { bias_term: true } }
"""


def _bn_scale_net(mode: str) -> tuple[caffe.Net, np.ndarray]:
    """BN_SCALE in ``mode`` with set statistics and weights, and an input for it."""
    getattr(caffe, f"set_mode_{mode}")()
    net = caffe.Net(text_format.Parse(BN_SCALE, caffe_pb2.NetParameter()), caffe.TEST)
    rng = np.random.default_rng(5)
    for name, values in (("bn", [rng.standard_normal(3), rng.random(3) + 0.5, [2.0]]),
                         ("scale", [rng.standard_normal(3), rng.standard_normal(3)]),
                         ("scale2", [rng.standard_normal(3), rng.standard_normal(3)])):
        for blob, v in zip(net.params[name], values):
            blob.data[...] = v
    return net, rng.standard_normal((4, 3, 5, 5)).astype(np.float32)


def _run(mode: str) -> np.ndarray:
    net, x = _bn_scale_net(mode)
    return net.forward(data=x)["data"].copy()


@cuda
def test_in_place_batchnorm_and_scale_match_the_cpu():
    try:
        np.testing.assert_allclose(_run("gpu"), _run("cpu"), rtol=1e-5, atol=1e-6)
    finally:
        caffe.set_mode_cpu()


@cuda
def test_in_place_batchnorm_and_scale_export_on_the_gpu():
    """The one-pass GPU affine writes with out=, which autograd refuses while an export
    traces the net (its Scale weights are Parameters there): it must take the two-step form."""
    from caffe import export

    try:
        expected = _run("gpu")
        net, x = _bn_scale_net("gpu")
        (got,) = export.to_torch(net, [x]).module()(torch.from_numpy(x))
        np.testing.assert_allclose(got.detach().cpu().numpy(), expected, rtol=1e-5, atol=1e-6)
    finally:
        caffe.set_mode_cpu()


RECURRENT = """
force_backward: true
layer { name: "data" type: "Input" top: "x" top: "cont"
  input_param { shape { dim: 5 dim: 3 dim: 4 } shape { dim: 5 dim: 3 } } }
layer { name: "rec" type: "%s" bottom: "x" bottom: "cont" top: "h"
  recurrent_param { num_output: 6 weight_filler { type: "uniform" min: -0.3 max: 0.3 }
                    bias_filler { type: "uniform" min: -0.2 max: 0.2 } } }
"""


def _recurrent(mode: str, kind: str, cont: np.ndarray) -> dict[str, np.ndarray]:
    getattr(caffe, f"set_mode_{mode}")()
    caffe.set_random_seed(3)
    net = caffe.Net(text_format.Parse(RECURRENT % kind, caffe_pb2.NetParameter()), caffe.TRAIN)
    rng = np.random.default_rng(6)
    net.blobs["x"].data[...] = rng.standard_normal((5, 3, 4))
    net.blobs["cont"].data[...] = cont
    net.forward()
    net.blobs["h"].diff[...] = rng.standard_normal((5, 3, 6))
    net.backward()
    out = {"h": net.blobs["h"].data.copy(), "dx": net.blobs["x"].diff.copy()}
    out.update({f"p{j}": b.diff.copy() for j, b in enumerate(net.params["rec"])})
    return out


@cuda
@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("reset_inside", [False, True])  # fused kernel / loop over time
def test_recurrent_layers_match_the_cpu(kind, reset_inside):
    cont = np.ones((5, 3), np.float32)
    cont[0] = 0
    if reset_inside:
        cont[2, 1] = 0
    try:
        gpu, cpu = _recurrent("gpu", kind, cont), _recurrent("cpu", kind, cont)
    finally:
        caffe.set_mode_cpu()
    for k in cpu:
        np.testing.assert_allclose(gpu[k], cpu[k], rtol=1e-4, atol=1e-5, err_msg=k)


def _device_ops_module():
    """tests/layers_extra/test_device_ops.py: its cases and helpers (one list for both)."""
    path = Path(__file__).parents[1] / "layers_extra" / "test_device_ops.py"
    spec = importlib.util.spec_from_file_location("device_ops_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _without_waiting(step, *args) -> None:
    """Run ``step(*args)`` with CUDA's sync debug mode on "error": any wait for the device
    fails."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step(*args)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
def test_label_reading_layers_never_wait_for_the_device(monkeypatch):
    monkeypatch.delenv("CAFFE_CHECK_LABELS", raising=False)
    ops = _device_ops_module()
    caffe.set_mode_gpu()
    try:
        for type_, param, bottoms, n_top, down in ops.DEVICE_CASES:
            layer, bottom, top = ops._layer(type_, param, ops._bottoms(bottoms), n_top,
                                            torch.float32)
            for b in bottom:
                b.to(torch.device("cuda"))
            for t in top:
                t.diff_tensor = torch.ones(t.shape, device="cuda")
            ops._net_step(layer, bottom, top, down)  # lazily built tables may read back
            _without_waiting(ops._net_step, layer, bottom, top, down)
    finally:
        caffe.set_mode_cpu()


@cuda
@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_recurrent_layers_hand_cudnn_one_weight_buffer_and_never_wait(kind):
    """Under set_precision("tf32") (cuDNN's recurrent kernels allowed) the fused LSTM and RNN
    keep their kernel weights (LSTM's reordered) and zero second bias as views of one buffer in
    cuDNN's layout, which torch takes as it is (no "not part of single contiguous chunk"
    compaction); once cont has been read, a pass never waits for the device."""
    import warnings

    from caffe.blob import Blob
    from caffe.net import create_layer

    caffe.set_mode_gpu()
    caffe.set_precision("tf32")
    try:
        lp = caffe_pb2.LayerParameter(name="rec", type=kind, bottom=["x", "cont"], top=["h"])
        text_format.Merge("recurrent_param { num_output: 6 weight_filler { type: 'gaussian' "
                          "std: 0.3 } }", lp)
        layer = create_layer(lp, caffe.TRAIN)
        x, cont, top = Blob(5, 3, 4), Blob(5, 3), Blob()
        x.tensor = torch.randn(5, 3, 4, device="cuda")
        cont.tensor = torch.ones(5, 3, device="cuda")
        cont.tensor[0] = 0
        layer.SetUp([x, cont], [top])
        top.diff_tensor = torch.ones(5, 3, 6, device="cuda")
        step = [layer, [x, cont], [top], [True, False]]
        ops = _device_ops_module()
        ops._net_step(*step)  # reads cont once
        assert layer._fused_last
        w_ih, b, w_hh = layer._params[:3]
        zero = layer._zero_bias
        assert len({t.untyped_storage().data_ptr() for t in (w_ih, b, w_hh, zero)}) == 1
        h0 = torch.zeros(1, 3, 6, device="cuda")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            if kind == "LSTM":
                torch.lstm(x.tensor, (h0, h0), [w_ih, w_hh, b, zero], True, 1, 0.0, False,
                           False, False)
            else:
                torch.rnn_tanh(x.tensor, h0, [w_ih, w_hh, b, zero], True, 1, 0.0, False,
                               False, False)
        _without_waiting(ops._net_step, *step)
    finally:
        caffe.set_precision("float32")
        caffe.set_mode_cpu()


@cuda
@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_recurrent_benchmark_twins_keep_their_weights_as_nn_does(kind):
    """Where cuDNN's kernels are allowed (set_precision("tf32")), the layer speed benchmark
    compares with nn.LSTM/nn.RNN as they run on a GPU: the twin's kernel weights in one cuDNN
    buffer (its own numbers still checked against the layer's)."""
    from benchmarks import layer_speed

    (case,) = layer_speed.select_cases([kind])
    caffe.set_mode_gpu()
    caffe.set_precision("tf32")
    try:
        bench = layer_speed.Bench(case, "tiny", torch.device("cuda"))
        assert len({p.untyped_storage().data_ptr() for p in bench.p_leaves[:4]}) == 1
        assert bench.verify() == ""
    finally:
        caffe.set_precision("float32")
        caffe.set_mode_cpu()
