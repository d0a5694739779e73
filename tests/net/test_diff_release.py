"""Solver.step releases intermediate blob diffs once backward is done with them
(``Net.forward_backward(release_diffs=True)``): training must give bit-identical results to
keeping every diff (``solver.keep_blob_diffs = True``), and only the right diffs go."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe.blob import RELEASED
from caffe.proto import caffe_pb2

FILL = "weight_filler { type: 'gaussian' std: 0.3 } bias_filler { type: 'constant' value: 0.1 }"

LENET_LIKE = f"""
name: "lenet_like"
layer {{ name: "input" type: "Input" top: "data" top: "label"
        input_param {{ shape {{ dim: 4 dim: 1 dim: 12 dim: 12 }} shape {{ dim: 4 }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param {{ num_output: 4 kernel_size: 3 {FILL} }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param {{ num_output: 6 kernel_size: 3 {FILL} }} }}
layer {{ name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
        inner_product_param {{ num_output: 10 {FILL} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param {{ num_output: 3 {FILL} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""


def mixed_net(module: str) -> str:
    """Split (conv1 and the branches are used twice), in-place BatchNorm + Scale + ReLU and
    Dropout, shared weights, Concat, Eltwise, a NumPy Python layer with a parameter and an
    autograd-backed Python layer."""
    shared = "param { name: 'sw' } param { name: 'sb' }"
    return f"""
name: "mixed"
layer {{ name: "input" type: "Input" top: "data" top: "label"
        input_param {{ shape {{ dim: 4 dim: 2 dim: 6 dim: 6 }} shape {{ dim: 4 }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 {FILL} }} }}
layer {{ name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }}
layer {{ name: "sc1" type: "Scale" bottom: "conv1" top: "conv1"
        scale_param {{ bias_term: true filler {{ type: 'uniform' min: 0.5 max: 1.5 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "conv2a" type: "Convolution" bottom: "conv1" top: "c2a" {shared}
        convolution_param {{ num_output: 3 kernel_size: 1 {FILL} }} }}
layer {{ name: "conv2b" type: "Convolution" bottom: "conv1" top: "c2b" {shared}
        convolution_param {{ num_output: 3 kernel_size: 1 {FILL} }} }}
layer {{ name: "cat" type: "Concat" bottom: "c2a" bottom: "c2b" top: "cat" }}
layer {{ name: "sum" type: "Eltwise" bottom: "c2a" bottom: "c2b" top: "sum"
        eltwise_param {{ operation: SUM coeff: 1 coeff: -0.5 }} }}
layer {{ name: "pyscale" type: "Python" bottom: "cat" top: "pys"
        python_param {{ module: "{module}" layer: "LearnedScale" }} }}
layer {{ name: "drop" type: "Dropout" bottom: "pys" top: "pys" }}
layer {{ name: "cube" type: "Python" bottom: "sum" top: "cube"
        python_param {{ module: "{module}" layer: "Cube" }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pys" top: "ip1"
        inner_product_param {{ num_output: 3 {FILL} }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "cube" top: "ip2"
        inner_product_param {{ num_output: 3 {FILL} }} }}
layer {{ name: "scores" type: "Eltwise" bottom: "ip1" bottom: "ip2" top: "scores" }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" top: "loss" }}
"""


def make_solver(net_text: str, keep: bool, iter_size: int = 1) -> caffe.SGDSolver:
    p = caffe_pb2.SolverParameter(base_lr=0.05, momentum=0.9, weight_decay=1e-3,
                                  lr_policy="fixed", random_seed=3, display=0,
                                  iter_size=iter_size, type="SGD")
    text_format.Merge(net_text, p.net_param)
    solver = caffe.get_solver(p)
    solver.keep_blob_diffs = keep
    rng = np.random.default_rng(0)
    net = solver.net
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, 3, net.blobs["label"].shape)
    return solver


def train(net_text: str, keep: bool, steps: int = 3, iter_size: int = 1):
    solver = make_solver(net_text, keep, iter_size)
    losses = []
    for _ in range(steps):
        solver.step(1)
        losses.append(solver.net.blobs["loss"].data.copy())
    params = {f"{n}[{j}]": b.data.copy() for n, bs in solver.net.params.items()
              for j, b in enumerate(bs)}
    return solver, losses, params


def assert_same_training(net_text: str, **kw) -> caffe.Solver:
    freed, losses_f, params_f = train(net_text, keep=False, **kw)
    _, losses_k, params_k = train(net_text, keep=True, **kw)
    for a, b in zip(losses_f, losses_k):
        assert np.array_equal(a, b)
    assert params_f.keys() == params_k.keys()
    for k in params_f:
        assert np.array_equal(params_f[k], params_k[k]), k
    return freed


def intermediate(net: caffe.Net) -> list[str]:
    keep = set(net.inputs) | set(net.outputs)
    return [n for n in net.blobs if n not in keep]


def test_lenet_like_training_is_bit_identical_and_diffs_are_released():
    solver = assert_same_training(LENET_LIKE)
    net = solver.net
    assert all(not net.blobs[n].has_diff for n in intermediate(net))
    assert all(b.has_diff for bs in net.params.values() for b in bs)
    assert net.blobs["loss"].diff[()] == 1.0  # the loss weight stays
    assert net.blobs["ip1"].data.any()  # data stays


@pytest.mark.parametrize("iter_size", [1, 2])
def test_mixed_net_training_is_bit_identical(python_layer_module, iter_size):
    text = mixed_net(python_layer_module)
    solver = assert_same_training(text, iter_size=iter_size)
    net = solver.net
    assert any("split" in n for n in net.blobs)
    assert all(not net.blobs[n].has_diff for n in intermediate(net))
    assert net.layer_dict["cube"]._graph is None  # autograd graph released too
    # a plain backward afterwards still works (the graph is recorded again by forward)
    net.forward()
    net.backward()
    assert net.blobs["conv1"].has_diff and net.blobs["cube"].has_diff


def test_keep_blob_diffs_and_plain_backward_keep_caffe_semantics():
    solver, _, _ = train(LENET_LIKE, keep=True, steps=1)
    assert all(solver.net.blobs[n].has_diff for n in intermediate(solver.net))
    net = solver.net
    net.forward()
    net.backward()
    assert all(net.blobs[n].has_diff for n in intermediate(net))


def test_a_param_diffs_only_callback_keeps_the_release():
    solver = make_solver(LENET_LIKE, keep=False)
    seen = []

    def reader(li: int) -> None:
        seen.append(li)

    reader.param_diffs_only = True
    solver.net.after_backward(reader)
    solver.step(1)
    net = solver.net
    assert sorted(seen) == list(range(len(net.layers)))
    assert all(not net.blobs[n].has_diff for n in intermediate(net))


def test_a_solver_gradient_callback_sees_every_diff_unless_it_reads_params_only():
    # pycaffe's on_gradients_ready may read any blob's diff during the step, as in Caffe
    solver = make_solver(LENET_LIKE, keep=False)
    net = solver.net
    seen = {}
    solver.add_callback(None, lambda: seen.update(
        {n: net.blobs[n].has_diff for n in intermediate(net)}))
    solver.step(1)
    assert seen and all(seen.values())

    class ParamsOnly:
        param_diffs_only = True

        def on_start(self) -> None:
            pass

        def on_gradients_ready(self) -> None:
            pass

    solver = make_solver(LENET_LIKE, keep=False)
    solver.add_callback(ParamsOnly())
    solver.step(1)
    assert all(not solver.net.blobs[n].has_diff for n in intermediate(solver.net))


def test_callbacks_and_debug_info_keep_every_diff():
    solver = make_solver(LENET_LIKE, keep=False)
    seen = []
    solver.net.after_backward(seen.append)
    solver.step(1)
    assert seen and all(solver.net.blobs[n].has_diff for n in intermediate(solver.net))
    solver = make_solver(LENET_LIKE, keep=False)
    solver.net.check_nan = True
    solver.step(1)
    assert all(solver.net.blobs[n].has_diff for n in intermediate(solver.net))


def test_release_plan_keeps_inputs_outputs_loss_and_data_layer_tops():
    text = LENET_LIKE.replace(
        'layer { name: "loss"',
        'layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" }\n'
        'layer { name: "loss"')
    net = caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TRAIN)
    released = {net._blob_names[net._blobs.index(b)]
                for blobs in net._diff_release for b in blobs}
    assert released == {"conv1", "pool1", "conv2", "pool2", "ip1", "ip2", "ip2_ip2_0_split_0",
                        "ip2_ip2_0_split_1", "label_input_1_split_0", "label_input_1_split_1"}
    assert {"data", "label", "acc", "loss"} <= set(net.blobs)
    dummy = caffe.Net(text_format.Parse(
        """layer { name: "d" type: "DummyData" top: "x"
                   dummy_data_param { shape { dim: 2 dim: 3 } } }
           layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
                   inner_product_param { num_output: 2 } }
           layer { name: "loss" type: "Reduction" bottom: "y" top: "loss" loss_weight: 1 }
           force_backward: true""", caffe_pb2.NetParameter()), caffe.TRAIN)
    names = {dummy._blob_names[dummy._blobs.index(b)]
             for blobs in dummy._diff_release for b in blobs}
    assert names == {"y"}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_reading_a_released_diff_warns_once_and_reads_zeros(monkeypatch):
    monkeypatch.setattr(RELEASED, "warned", False)
    records = _Records()
    logger = logging.getLogger("caffe")
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(records)
    try:
        solver = make_solver(LENET_LIKE, keep=False)
        solver.step(2)  # layers reading released diffs inside a step do not warn
        assert records.messages == []
        assert not solver.net.blobs["conv1"].diff.any()
        assert not solver.net.blobs["ip1"].diff_tensor.any()
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    assert len(records.messages) == 1
    assert "keep_blob_diffs" in records.messages[0]
