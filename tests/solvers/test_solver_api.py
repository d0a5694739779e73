"""pycaffe's solver API and Caffe's Solver behaviour: solver types, nets and net states, test
nets, callbacks, logging, loss smoothing, actions."""

from __future__ import annotations

import logging
import os
import re

import numpy as np
import pytest
from solver_nets import REGRESSION_NET, params_of, regression_solver, solver_param

import caffe
from caffe._common import LOG
from caffe.solvers import SolverAction

STAGED_NET = """
name: "staged"
layer { name: "x" type: "DummyData" top: "x" top: "t"
  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 1 }
    data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 0 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "out"
  inner_product_param { num_output: 1 weight_filler { type: "constant" value: 0.5 } } }
layer { name: "double" type: "Power" bottom: "out" top: "doubled" power_param { scale: 2 }
  include { stage: "double" } }
layer { name: "deep" type: "Power" bottom: "out" top: "deep" power_param { scale: 3 }
  include { min_level: 2 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "t" top: "loss" }
"""


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
    handler = Lines()
    level = LOG.level
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    yield handler.lines
    LOG.removeHandler(handler)
    LOG.setLevel(level)


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------- construction
@pytest.mark.parametrize("name", ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
def test_get_solver_builds_the_named_type(tmp_path, name):
    path = write(tmp_path, "s.prototxt", f'type: "{name}" base_lr: 0.1 lr_policy: "fixed" '
                 f'net_param {{ {REGRESSION_NET} }}')
    solver = caffe.get_solver(path)
    assert type(solver) is getattr(caffe, f"{name}Solver")
    assert solver.type == name


def test_deprecated_solver_type_enum(tmp_path):
    path = write(tmp_path, "s.prototxt", 'solver_type: ADADELTA base_lr: 1 lr_policy: "fixed" '
                 f'net_param {{ {REGRESSION_NET} }}')
    solver = caffe.get_solver(path)
    assert isinstance(solver, caffe.AdaDeltaSolver)
    assert solver.param.type == "AdaDelta" and not solver.param.HasField("solver_type")


def test_direct_classes_and_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("models")
    write(tmp_path, "models/net.prototxt", REGRESSION_NET)
    write(tmp_path, "models/solver.prototxt",
          'net: "models/net.prototxt" base_lr: 0.1 lr_policy: "fixed"')
    solver = caffe.NesterovSolver("models/solver.prototxt")
    assert isinstance(solver, caffe.NesterovSolver)
    assert solver.net.name == "regression" and solver.test_nets == []
    assert solver.param.snapshot_prefix == "models/solver"  # Caffe's default prefix
    write(tmp_path, "models/s2.prototxt",
          'net: "models/net.prototxt" base_lr: 0.1 lr_policy: "fixed" snapshot_prefix: "models"')
    assert caffe.SGDSolver("models/s2.prototxt").param.snapshot_prefix == "models/s2"


def test_train_state_and_generic_test_nets_with_states():
    p = solver_param("test_iter: 1 test_iter: 2 test_interval: 100 "
                     "train_state { level: 3 } "
                     "test_state { stage: 'double' } test_state { level: 0 }", net=STAGED_NET)
    solver = caffe.get_solver(p)
    assert "deep" in solver.net.blobs and "doubled" not in solver.net.blobs
    assert solver.net.phase == caffe.TRAIN
    assert len(solver.test_nets) == 2
    first, second = solver.test_nets
    assert first.phase == caffe.TEST
    assert "doubled" in first.blobs and "deep" not in first.blobs
    assert "doubled" not in second.blobs
    # outputs in name order: doubled (2 values of 2 * 1.5), loss (2 * 1.5^2 / (2 * 2))
    assert solver.test(0) == pytest.approx([3.0, 3.0, 1.125])


def test_explicit_test_nets_come_before_generic_ones(tmp_path):
    net = write(tmp_path, "net.prototxt", STAGED_NET)
    p = solver_param(f"test_net: '{net}' test_iter: 1 test_iter: 1 test_interval: 10 "
                     "test_net_param { name: 'inline' layer { name: 'x' type: 'DummyData' "
                     "top: 'x' dummy_data_param { shape { dim: 1 } } } } test_iter: 1",
                     net=STAGED_NET)
    solver = caffe.get_solver(p)
    assert [n.name for n in solver.test_nets] == ["inline", "staged", "staged"]


def test_weights_field_loads_weights_into_train_and_test_nets(tmp_path):
    source = regression_solver("base_lr: 0.1")
    source.step(2)
    source.net.save(str(tmp_path / "w.caffemodel"))
    p = solver_param(f"weights: '{tmp_path}/w.caffemodel' test_iter: 1 test_interval: 5")
    solver = caffe.get_solver(p)
    for a, b in zip(params_of(solver), params_of(source)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(solver.test_nets[0].params["ip"][0].data,
                                  source.net.params["ip"][0].data)


def test_test_nets_share_the_train_weights_and_test_uses_test_iter():
    solver = regression_solver("test_iter: 3 test_interval: 2 test_compute_loss: true")
    test_net = solver.test_nets[0]
    solver.step(1)
    assert test_net.params["ip"][0].data is not None
    np.testing.assert_array_equal(test_net.params["ip"][0].data,
                                  solver.net.params["ip"][0].data)
    calls = []
    test_net.after_forward(lambda li: calls.append(li) if li == 0 else None)
    means = solver.test(0)
    assert len(calls) == 3
    test_net.forward()
    assert means == pytest.approx([float(test_net.blobs["loss"].data)], rel=1e-6)
    assert solver.mean_scores[0] == means


def test_share_weights_with_an_outside_net():
    solver = regression_solver()
    other = caffe.Net(solver_param().net_param, caffe.TEST)
    solver.share_weights(other)
    solver.step(2)
    np.testing.assert_array_equal(other.params["ip"][0].data, solver.net.params["ip"][0].data)


# ---------------------------------------------------------------------------- the loop
def test_callbacks_run_around_the_gradients():
    solver = regression_solver("momentum: 0.9")
    events = []

    def on_start():
        events.append(("start", solver.iter, float(np.abs(solver.net.params["ip"][0].diff)
                                                   .sum())))

    def on_gradients_ready():
        events.append(("ready", solver.iter, float(np.abs(solver.net.params["ip"][0].diff)
                                                   .sum())))

    solver.add_callback(on_start, on_gradients_ready)
    solver.step(2)
    assert [e[:2] for e in events] == [("start", 0), ("ready", 0), ("start", 1), ("ready", 1)]
    assert events[0][2] == 0.0 and events[1][2] > 0.0  # diffs cleared, then computed

    class Both:
        count = 0

        def on_start(self):
            Both.count += 1

        def on_gradients_ready(self):
            Both.count += 10

    solver.add_callback(Both())
    solver.step(1)
    assert Both.count == 11


def test_iter_size_averages_the_loss_and_the_gradient():
    one = regression_solver("momentum: 0.9")
    three = regression_solver("momentum: 0.9 iter_size: 3")
    for _ in range(3):
        one.step(1)
        three.step(1)
        assert three.smoothed_loss == pytest.approx(one.smoothed_loss, rel=1e-6)
    for a, b in zip(params_of(one), params_of(three)):
        np.testing.assert_allclose(a, b, rtol=1e-5)


def test_average_loss_smooths_over_a_window():
    solver = regression_solver("average_loss: 3")
    losses = []
    for _ in range(5):
        losses.append(regression_loss(solver))
        solver.step(1)
    fresh = regression_solver("average_loss: 3")
    fresh.step(5)
    assert fresh.smoothed_loss == pytest.approx(np.mean(losses[-3:]), rel=1e-5)
    fresh.step(2)  # every step() call starts a new window, as in Caffe
    assert len(fresh._losses) == 2


def regression_loss(solver) -> float:
    return float(solver.net.forward()["loss"])


def test_display_logs_in_caffes_format(log_lines, tmp_path):
    solver = regression_solver(f"display: 2 test_iter: 1 test_interval: 2 average_loss: 1 "
                               f"snapshot: 2 snapshot_prefix: '{tmp_path}/d'")
    solver.step(3)
    text = "\n".join(log_lines)
    assert "Iteration 0, Testing net (#0)" in text
    assert "    Test net output #0: loss = " in text and "(* 1 = " in text
    loss = solver.smoothed_loss
    # solver.cpp's line: "Iteration 2 (1234 iter/s, 0.0016s/2 iters), loss = 0.57"
    assert re.search(rf"Iteration 2 \([-\d.e+]+ iter/s, [-\d.e+]+s/2 iters\), loss = {loss:g}\n",
                     text + "\n")
    assert "    Train net output #0: loss = " in text
    assert "Iteration 2, lr = 0.05" in text
    assert f"Snapshotting to binary proto file {tmp_path}/d_iter_2.caffemodel" in text
    assert (f"Snapshotting solver state to binary proto file {tmp_path}/d_iter_2.solverstate"
            in text)
    assert "Iteration 1, lr" not in text


def test_test_initialization_false_skips_the_first_test(log_lines):
    solver = regression_solver("test_iter: 1 test_interval: 2 test_initialization: false")
    solver.step(3)
    text = "\n".join(log_lines)
    assert "Iteration 0, Testing" not in text and "Iteration 2, Testing net (#0)" in text


def test_debug_info_and_clipping_are_logged(log_lines):
    solver = regression_solver("display: 1 debug_info: true clip_gradients: 0.001")
    solver.step(1)
    text = "\n".join(log_lines)
    assert "[Backward] All net params (data, diff): L1 norm = (" in text  # Caffe's summary
    assert "[Update]" not in text  # Caffe master's Net::Update logs nothing
    assert "[Forward] Layer ip" in text
    assert "Gradient clipping: scaling down gradients (L2 norm" in text


def test_solve_runs_to_max_iter_and_reports(log_lines, tmp_path):
    solver = regression_solver(f"max_iter: 4 display: 2 test_iter: 1 test_interval: 4 "
                               f"snapshot_prefix: '{tmp_path}/x'")
    solver.solve()
    text = "\n".join(log_lines)
    assert solver.iter == 4
    assert "Solving regression" in text and "Learning Rate Policy: fixed" in text
    assert "Iteration 4, loss = " in text and "Iteration 4, Testing net (#0)" in text
    assert text.rstrip().endswith("Optimization Done.")


def test_action_function_stops_and_snapshots(tmp_path):
    solver = regression_solver(f"max_iter: 100 snapshot_prefix: '{tmp_path}/a'")
    requests = iter([SolverAction.NONE, SolverAction.SNAPSHOT, SolverAction.NONE,
                     SolverAction.STOP])
    solver.set_action_function(lambda: next(requests))
    solver.solve()
    assert solver.iter == 4 and solver.requested_early_exit
    assert [os.path.basename(s) for s in solver.snapshots] == ["a_iter_2.caffemodel",
                                                              "a_iter_4.caffemodel"]
    solver = regression_solver(f"max_iter: 100 snapshot_prefix: '{tmp_path}/b'")
    solver.set_action_function(lambda: SolverAction.SNAPSHOT | SolverAction.STOP)
    solver.solve()
    assert solver.iter == 1 and len(solver.snapshots) == 1


def test_random_seed_makes_construction_reproducible():
    a = regression_solver("random_seed: 3")
    caffe.set_random_seed(99)
    b = regression_solver("random_seed: 3")
    np.testing.assert_array_equal(a.net.params["ip"][0].data, b.net.params["ip"][0].data)
    c = regression_solver("random_seed: 4")
    assert not np.array_equal(a.net.params["ip"][0].data, c.net.params["ip"][0].data)


def test_repr_and_param_are_live():
    solver = regression_solver()
    assert "SGDSolver" in repr(solver)
    solver.param.display = 7
    assert solver.param.display == 7
