"""Snapshots and restores: file names and layouts, binary proto and HDF5 states, bit-identical
resumes (in this process and in a new one), Caffe-made solver states, mismatches."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from solver_nets import params_of, regression_solver, solver_param

import caffe
from caffe.errors import FileFormatError, SolverError
from caffe.proto import caffe_pb2, files

HERE = os.path.dirname(os.path.abspath(__file__))
CAFFE_LENET = "/work/shared/models/lenet_mnist_v1"


def run_steps(solver, n: int) -> list[float]:
    losses = []
    for _ in range(n):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    return losses


@pytest.mark.parametrize("rule", ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_snapshot_then_restore_continues_bit_identically(tmp_path, rule, fmt):
    text = (f"type: '{rule}' snapshot_format: {fmt} snapshot_prefix: '{tmp_path}/snap' "
            "lr_policy: 'step' gamma: 0.5 stepsize: 3 weight_decay: 0.01")
    if rule in ("SGD", "Nesterov", "AdaDelta", "Adam"):
        text += " momentum: 0.9"
    full = regression_solver(text)
    full_losses = run_steps(full, 8)

    first = regression_solver(text)
    losses = run_steps(first, 4)
    model = first.snapshot()
    ext = ".h5" if fmt == "HDF5" else ""
    assert model == f"{tmp_path}/snap_iter_4.caffemodel{ext}"
    state = f"{tmp_path}/snap_iter_4.solverstate{ext}"
    assert os.path.isfile(model) and os.path.isfile(state)

    second = regression_solver(text)
    second.restore(state)
    assert second.iter == 4
    assert second.lr == first.lr
    for a, b in zip(second.history, first.history):
        assert torch_equal(a, b)
    losses += run_steps(second, 4)
    assert losses == full_losses
    for a, b in zip(params_of(second), params_of(full)):
        np.testing.assert_array_equal(a, b)


def torch_equal(a, b) -> bool:
    return bool((a == b).all()) and a.shape == b.shape


def test_binary_state_layout(tmp_path):
    solver = regression_solver(f"type: 'Adam' snapshot_prefix: '{tmp_path}/s'")
    run_steps(solver, 3)
    solver.snapshot()
    state = files.read_binary(f"{tmp_path}/s_iter_3.solverstate", caffe_pb2.SolverState())
    assert state.iter == 3
    assert state.learned_net == f"{tmp_path}/s_iter_3.caffemodel"
    assert len(state.history) == 4  # Adam: m then v for the weight and the bias
    assert [tuple(h.shape.dim) for h in state.history] == [(3, 4), (3,), (3, 4), (3,)]
    np.testing.assert_array_equal(np.array(state.history[2].data).reshape(3, 4),
                                  solver.history[2].numpy())
    weights = files.read_binary(f"{tmp_path}/s_iter_3.caffemodel", caffe_pb2.NetParameter())
    assert [lp.name for lp in weights.layer if lp.blobs] == ["ip"]
    assert not weights.layer[2].blobs[0].diff


def test_hdf5_state_layout_and_snapshot_diff(tmp_path):
    solver = regression_solver(f"snapshot_format: HDF5 snapshot_diff: true momentum: 0.9 "
                               f"snapshot_prefix: '{tmp_path}/h'")
    run_steps(solver, 2)
    solver.snapshot()
    with h5py.File(f"{tmp_path}/h_iter_2.solverstate.h5", "r") as f:
        assert int(f["iter"][()]) == 2
        assert f["learned_net"][()].decode() == f"{tmp_path}/h_iter_2.caffemodel.h5"
        assert int(f["current_step"][()]) == 0
        assert sorted(f["history"]) == ["0", "1"]
        np.testing.assert_array_equal(f["history/0"][()], solver.history[0].numpy())
    with h5py.File(f"{tmp_path}/h_iter_2.caffemodel.h5", "r") as f:
        np.testing.assert_array_equal(f["data/ip/0"][()], solver.net.params["ip"][0].data)
        np.testing.assert_array_equal(f["diff/ip/0"][()], solver.net.params["ip"][0].diff)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def test_multistep_step_counter_is_restored(tmp_path):
    text = (f"lr_policy: 'multistep' gamma: 0.1 stepvalue: 1 stepvalue: 2 "
            f"snapshot_prefix: '{tmp_path}/m'")
    solver = regression_solver(text)
    run_steps(solver, 3)
    solver.snapshot()
    fresh = regression_solver(text)
    fresh.restore(f"{tmp_path}/m_iter_3.solverstate")
    assert fresh.current_step == 2
    assert fresh.lr == pytest.approx(solver.lr)


def test_learned_net_is_found_next_to_the_state(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("run")
    solver = regression_solver("snapshot_prefix: 'run/s' momentum: 0.9")
    run_steps(solver, 2)
    solver.snapshot()
    os.mkdir("elsewhere")
    monkeypatch.chdir("elsewhere")
    fresh = regression_solver("snapshot_prefix: 'run/s' momentum: 0.9")
    fresh.restore(str(tmp_path / "run" / "s_iter_2.solverstate"))
    for a, b in zip(params_of(fresh), params_of(solver)):
        np.testing.assert_array_equal(a, b)


def test_mismatched_states_raise_solver_error(tmp_path):
    sgd = regression_solver(f"snapshot_prefix: '{tmp_path}/a'")
    run_steps(sgd, 1)
    sgd.snapshot()
    state = f"{tmp_path}/a_iter_1.solverstate"
    adam = regression_solver("type: 'Adam'")
    with pytest.raises(SolverError, match="holds 2 history blobs.*needs 4"):
        adam.restore(state)
    assert adam.iter == 0
    other = solver_param().net_param
    other.layer[2].inner_product_param.num_output = 2
    other.layer[1].input_param.shape[0].dim[1] = 2
    p = solver_param()
    p.net_param.CopyFrom(other)
    small = caffe.get_solver(p)
    with pytest.raises(SolverError, match=r"history blob 0 has shape \(3, 4\).*ip\[0\]"):
        small.restore(state)
    with pytest.raises(SolverError, match="does not exist"):
        sgd.restore(f"{tmp_path}/missing.solverstate")
    (tmp_path / "junk.solverstate").write_bytes(b"\xff\xfe not a proto")
    with pytest.raises(FileFormatError):
        sgd.restore(str(tmp_path / "junk.solverstate"))
    os.remove(f"{tmp_path}/a_iter_1.caffemodel")
    with pytest.raises(SolverError, match="learned net"):
        regression_solver().restore(state)


def test_solve_snapshots_periodically_and_after_training(tmp_path):
    solver = regression_solver(f"max_iter: 7 snapshot: 3 snapshot_prefix: '{tmp_path}/p'")
    solver.solve()
    assert solver.iter == 7
    assert [os.path.basename(m) for m in solver.snapshots] == [
        "p_iter_3.caffemodel", "p_iter_6.caffemodel", "p_iter_7.caffemodel"]
    solver = regression_solver(f"max_iter: 6 snapshot: 3 snapshot_prefix: '{tmp_path}/q' "
                               "snapshot_after_train: false")
    solver.solve()
    assert len(solver.snapshots) == 2
    solver = regression_solver(f"max_iter: 4 snapshot_prefix: '{tmp_path}/r' "
                               "snapshot_after_train: false")
    solver.solve()
    assert solver.snapshots == []


def test_a_second_solve_at_max_iter_snapshots_the_current_weights(tmp_path):
    solver = regression_solver(f"max_iter: 2 snapshot_prefix: '{tmp_path}/s'")
    solver.solve()
    weights = solver.net.params["ip"][0]
    weights.data[...] = 7.0  # changed after training: Caffe's Solve snapshots again
    solver.solve()
    saved = files.read_binary(f"{tmp_path}/s_iter_2.caffemodel", caffe_pb2.NetParameter())
    layer = next(lp for lp in saved.layer if lp.name == "ip")
    assert set(layer.blobs[0].data) == {7.0}


def test_solve_resumes_from_a_state(tmp_path):
    text = f"max_iter: 6 momentum: 0.9 snapshot_prefix: '{tmp_path}/z'"
    full = regression_solver(text)
    full.solve()
    half = regression_solver(text)
    half.step(3)
    half.snapshot()
    resumed = regression_solver(text)
    resumed.solve(f"{tmp_path}/z_iter_3.solverstate")
    assert resumed.iter == 6
    for a, b in zip(params_of(resumed), params_of(full)):
        np.testing.assert_array_equal(a, b)


RESUME_TEXT = ("type: 'Nesterov' momentum: 0.9 weight_decay: 0.005 lr_policy: 'inv' "
               "gamma: 0.1 power: 0.75 snapshot_prefix: '%s'")

RESUME_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {here!r})
    from solver_nets import regression_solver, params_of
    prefix, out = sys.argv[1:3]
    solver = regression_solver({text!r} % prefix)
    solver.restore(prefix + "_iter_10.solverstate", exact=True)
    losses = []
    for _ in range(10):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    np.savez(out, losses=np.array(losses), w=params_of(solver)[0], b=params_of(solver)[1],
             iter=solver.iter)
""")


def test_resume_in_a_new_process_is_bit_identical(tmp_path):
    prefix = str(tmp_path / "snap")
    full = regression_solver(RESUME_TEXT % prefix)
    full_losses = run_steps(full, 20)
    first = regression_solver(RESUME_TEXT % prefix)
    first_losses = run_steps(first, 10)
    first.snapshot()
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT.format(here=HERE, text=RESUME_TEXT))
    subprocess.run([sys.executable, str(script), prefix, str(tmp_path / "resumed")],
                   check=True, env=dict(os.environ, GLOG_minloglevel="2"), timeout=120)
    resumed = np.load(tmp_path / "resumed.npz")
    assert int(resumed["iter"]) == 20
    assert first_losses + resumed["losses"].tolist() == full_losses
    w, b = params_of(full)
    np.testing.assert_array_equal(resumed["w"], w)
    np.testing.assert_array_equal(resumed["b"], b)


LENET_NET = """
name: "LeNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 1 dim: 28
  dim: 28 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 20 kernel_size: 5 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 50 kernel_size: 5 } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  inner_product_param { num_output: 500 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


@pytest.mark.skipif(not os.path.isdir(CAFFE_LENET), reason="Caffe LeNet files not available")
def test_restore_a_solverstate_written_by_caffe(monkeypatch):
    """BVLC Caffe's state: legacy 4-D history shapes and a learned_net relative to the folder
    Caffe ran in (found next to the state instead)."""
    monkeypatch.chdir(CAFFE_LENET)
    solver = caffe.get_solver(solver_param("momentum: 0.9", net=LENET_NET))
    solver.restore("lenet_iter_10000.solverstate")
    assert solver.iter == 10000
    state = files.read_binary("lenet_iter_10000.solverstate", caffe_pb2.SolverState())
    np.testing.assert_array_equal(solver.history[0].numpy().ravel(), state.history[0].data)
    weights = files.read_binary("lenet_iter_10000.caffemodel", caffe_pb2.NetParameter())
    conv1 = next(lp for lp in weights.layers if lp.name == "conv1")
    np.testing.assert_array_equal(solver.net.params["conv1"][0].data.ravel(),
                                  conv1.blobs[0].data)
