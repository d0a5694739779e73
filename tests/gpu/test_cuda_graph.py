"""Net.use_cuda_graph: which part of a net is graphed, what the graph reads from outside, and
(on CUDA only) that graphed training equals eager training step for step."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe.cuda_graph import GraphRunner, _Graph
from caffe.proto import caffe_pb2

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

BODY = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
  include { phase: TEST } }
"""
DUMMY = """
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 2 dim: 7 dim: 7 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
"""
INPUT = """
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 8 dim: 2 dim: 7 dim: 7 } shape { dim: 8 } } }
"""


def _net(text: str, phase=caffe.TRAIN) -> caffe.Net:
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


def test_data_layers_stay_eager_and_the_body_is_graphed():
    net = _net(DUMMY + BODY)
    runner = GraphRunner(net)
    assert runner.start == 1  # DummyData (graph_safe = False) runs eagerly


def test_a_python_layer_that_needs_backward_keeps_the_net_eager(tmp_path, monkeypatch, caplog):
    (tmp_path / "pyl.py").write_text(
        "import caffe\n"
        "class Twice(caffe.Layer):\n"
        "    def reshape(self, bottom, top): top[0].reshape(*bottom[0].data.shape)\n"
        "    def forward(self, bottom, top): top[0].data[...] = 2 * bottom[0].data\n"
        "    def backward(self, top, pd, bottom): bottom[0].diff[...] = 2 * top[0].diff\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = INPUT + BODY.replace(
        'bottom: "conv" top: "ip"', 'bottom: "twice" top: "ip"').replace(
        'layer { name: "ip"', 'layer { name: "twice" type: "Python" bottom: "conv" top: "twice"'
        ' python_param { module: "pyl" layer: "Twice" } }\nlayer { name: "ip"')
    net = _net(text)
    log = logging.getLogger("caffe")  # does not propagate to the root logger
    level = log.level
    log.addHandler(caplog.handler)
    log.setLevel(logging.WARNING)
    try:
        runner = GraphRunner(net)
    finally:
        log.removeHandler(caplog.handler)
        log.setLevel(level)
    assert runner.start is None
    assert "layer 'twice' (Python) cannot be graphed" in caplog.text


def test_graph_inputs_are_what_the_body_reads_from_outside():
    net = _net(DUMMY + BODY)
    g = _Graph(net, 1, "forward_backward")
    names = {id(b): n for n, b in net.blobs.items()}
    data_in = [names.get(id(b), "param") for b in g.data_in]
    assert data_in == ["data", "label"] + ["param"] * 4  # conv and ip weights and biases
    diff_in = [names.get(id(b), "param") for b in g.diff_in]
    assert diff_in == ["loss"] + ["param"] * 4  # the seeded loss weight, param diffs


def test_cpu_mode_ignores_the_request():
    caffe.set_mode_cpu()
    losses = []
    for graphed in (False, True):
        caffe.set_random_seed(5)
        net = _net(DUMMY + BODY)
        if graphed:
            net.use_cuda_graph()
            assert not net._graph_runner.usable()
        losses.append([net.forward_backward() for _ in range(3)])
    assert losses[0] == losses[1]


def _train(graphed: bool, steps: int = 6) -> tuple[list[float], dict[str, np.ndarray]]:
    caffe.set_mode_gpu()
    caffe.set_random_seed(11)
    solver_param = caffe_pb2.SolverParameter(base_lr=0.05, momentum=0.9, weight_decay=1e-3,
                                             lr_policy="fixed", display=0, max_iter=100)
    solver_param.net_param.CopyFrom(text_format.Parse(INPUT + BODY, caffe_pb2.NetParameter()))
    solver = caffe.SGDSolver(solver_param)
    if graphed:
        solver.net.use_cuda_graph()
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        solver.net.blobs["data"].data[...] = rng.standard_normal((8, 2, 7, 7))
        solver.net.blobs["label"].data[...] = rng.integers(0, 3, 8)
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    weights = {f"{k}{i}": p.data.copy() for k, ps in solver.net.params.items()
               for i, p in enumerate(ps)}
    return losses, weights


@cuda
def test_graphed_training_equals_eager_training():
    eager_losses, eager_w = _train(False)
    losses, w = _train(True)
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-5)
    for k in eager_w:
        np.testing.assert_allclose(w[k], eager_w[k], rtol=1e-5, atol=1e-7)


@cuda
def test_graphed_forward_follows_new_inputs():
    caffe.set_mode_gpu()
    net = _net(INPUT + BODY, caffe.TEST)
    net.use_cuda_graph()
    ref = _net(INPUT + BODY, caffe.TEST)
    ref.share_with(net)
    rng = np.random.default_rng(1)
    for _ in range(4):
        x = rng.standard_normal((8, 2, 7, 7)).astype(np.float32)
        out = net.forward(data=x, label=np.zeros(8))
        expect = ref.forward(data=x, label=np.zeros(8))
        np.testing.assert_allclose(out["loss"], expect["loss"], rtol=1e-5)
    assert "forward" in net._graph_runner.graphs


@cuda
def test_batchnorm_global_stats_follow_weight_writes_on_the_gpu():
    """BatchNorm keeps its derived statistics between passes on the GPU: a NumPy write to
    its blobs (net surgery, copy_from) must still be seen."""
    caffe.set_mode_gpu()
    net = _net(INPUT + 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" '
               'batch_norm_param { use_global_stats: true } }', caffe.TEST)
    x = np.random.default_rng(2).standard_normal((8, 2, 7, 7)).astype(np.float32)
    net.params["bn"][1].data[...] = 1  # variance sum 1 (Caffe's blobs start at 0)
    net.params["bn"][2].data[...] = 1
    first = net.forward(data=x, label=np.zeros(8))["bn"].copy()
    np.testing.assert_allclose(first, x / np.sqrt(1 + 1e-5), rtol=1e-5)
    net.params["bn"][0].data[...] = [1, 2]
    second = net.forward(data=x, label=np.zeros(8))["bn"]
    expect = (x - np.array([1, 2], np.float32).reshape(1, 2, 1, 1)) / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(second, expect, rtol=1e-5, atol=1e-6)


@cuda
def test_a_graphed_batchnorm_follows_new_statistics():
    """A replayed TEST net must read BatchNorm's statistics each time (the eager path keeps
    derived values between passes; the graph may not)."""
    caffe.set_mode_gpu()
    text = INPUT + ('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" '
                    'batch_norm_param { use_global_stats: true } }')
    net = _net(text, caffe.TEST)
    net.use_cuda_graph()
    net.params["bn"][1].data[...] = 1  # variance sum 1 (Caffe's blobs start at 0)
    net.params["bn"][2].data[...] = 1
    x = np.random.default_rng(3).standard_normal((8, 2, 7, 7)).astype(np.float32)
    for _ in range(3):  # eager, capture, replay
        net.forward(data=x, label=np.zeros(8))
    assert "forward" in net._graph_runner.graphs
    net.params["bn"][0].data[...] = [1, 2]
    out = net.forward(data=x, label=np.zeros(8))["bn"]
    expect = (x - np.array([1, 2], np.float32).reshape(1, 2, 1, 1)) / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-6)
