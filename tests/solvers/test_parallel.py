"""Data-parallel training (``caffe.NCCL`` on torch.distributed, ``caffe train`` with several
ranks): two CPU processes joined through Gloo must end with the weights one process reaches on
their two shares of the data as one batch, on every rank, with layer-wise and whole-net
reduction; only rank 0 snapshots; a stop requested by one rank stops both."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import caffe
from caffe.errors import CaffeError
from caffe.parallel import NCCL, spawn_ranks
from caffe.tools.train import train_rank

ROWS, D_IN, D_OUT = 16, 5, 3


@pytest.fixture(autouse=True)
def _loopback(monkeypatch):
    """Gloo on the loopback interface (a CI machine's host name may not resolve), and a rank
    that waits for another more than a minute fails instead of hanging the suite."""
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.setenv("NEOCAFFE_DIST_TIMEOUT", "60")


NET = """
name: "parallel"
layer { name: "data" type: "HDF5Data" top: "x" top: "y"
  hdf5_data_param { source: "%(list)s" batch_size: %(batch)d } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
  param { name: "w1" } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: %(d_out)d weight_filler { type: "gaussian" std: 0.5 }
    bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "pred"
  inner_product_param { num_output: %(d_out)d weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "pred" bottom: "y" top: "loss" }
"""

SHARED = """
layer { name: "ip3" type: "InnerProduct" bottom: "x" top: "again" param { name: "w1" }
  inner_product_param { num_output: %(d_out)d bias_term: false } }
layer { name: "loss2" type: "EuclideanLoss" bottom: "again" bottom: "y" top: "loss2" }
"""

# a BatchNorm (stored statistics: the ranks' halves give the joint batch's numbers) and the
# Scale it folds: the Scale's diffs are averaged after the BatchNorm's backward computes them
# (its statistics stay 0: eps 1 makes it the identity, so the training stays finite)
FOLDED = """
layer { name: "bn" type: "BatchNorm" bottom: "h" top: "h"
  batch_norm_param { use_global_stats: true eps: 1 } }
layer { name: "scale" type: "Scale" bottom: "h" top: "h" scale_param { bias_term: true } }
"""

SOLVER = """
net: "%(dir)s/net.prototxt"
base_lr: 0.05 momentum: 0.9 weight_decay: 0.01 lr_policy: "fixed" type: "SGD"
max_iter: 6 display: 0 random_seed: 11 layer_wise_reduce: %(layer_wise)s
snapshot_after_train: true snapshot_prefix: "%(dir)s/snap" snapshot_format: BINARYPROTO
"""


def write_case(folder: str, batch: int, layer_wise: bool, shared: bool,
               folded: bool = False) -> str:
    """HDF5 data, net.prototxt and solver.prototxt in ``folder``; returns the solver path."""
    rng = np.random.default_rng(3)
    with h5py.File(os.path.join(folder, "d.h5"), "w") as f:
        f["x"] = rng.standard_normal((ROWS, D_IN)).astype(np.float32)
        f["y"] = rng.standard_normal((ROWS, D_OUT)).astype(np.float32)
    with open(os.path.join(folder, "list.txt"), "w") as f:
        f.write(os.path.join(folder, "d.h5") + "\n")
    values = {"list": os.path.join(folder, "list.txt"), "batch": batch, "d_out": D_OUT,
              "layer_wise": str(layer_wise).lower(), "dir": folder}
    with open(os.path.join(folder, "net.prototxt"), "w") as f:
        net = NET.replace('layer { name: "ip2"', FOLDED + 'layer { name: "ip2"') if folded else NET
        f.write((net + (SHARED if shared else "")) % values)
    path = os.path.join(folder, "solver.prototxt")
    with open(path, "w") as f:
        f.write(SOLVER % values)
    return path


def single_process_weights(folder: str, shared: bool, folded: bool = False
                           ) -> list[np.ndarray]:
    """What one solver reaches on both ranks' rows as one batch of twice the size."""
    path = write_case(folder, 8, True, shared, folded)
    solver = caffe.SGDSolver(path)
    solver.step(solver.param.max_iter)
    return [b.data.copy() for b in solver.net.learnable_params]


# The pattern of pycaffe's python/train.py (multiprocessing.Process, NCCL.new_uid, bcast,
# add_callback, after_backward), on the CPU.
SCRIPT = textwrap.dedent("""
    import sys
    from multiprocessing import Process

    import numpy as np

    import caffe

    def solve(proto, uid, rank, count, out, stop_at):
        caffe.set_mode_cpu()
        caffe.set_solver_count(count)
        caffe.set_solver_rank(rank)
        caffe.set_multiprocess(True)
        solver = caffe.SGDSolver(proto)
        nccl = caffe.NCCL(solver, uid)
        nccl.bcast()
        solver.add_callback(nccl)
        if solver.param.layer_wise_reduce:
            solver.net.after_backward(nccl)
        if stop_at and rank == 1:
            polls = []
            def local():
                polls.append(1)
                return caffe.solvers.SolverAction.STOP if len(polls) == stop_at else 0
            solver.set_action_function(nccl.action_function(local))
        elif stop_at:
            solver.set_action_function(nccl.action_function(lambda: 0))
        solver.step(solver.param.max_iter)
        np.savez(out % rank, *[b.data for b in solver.net.learnable_params], iter=solver.iter)

    if __name__ == "__main__":
        proto, out, stop_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
        uid = caffe.NCCL.new_uid()
        procs = [Process(target=solve, args=(proto, uid, rank, 2, out, stop_at))
                 for rank in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        sys.exit(max(p.exitcode if p.exitcode is not None else 99 for p in procs))
""")


def run_script(folder: str, solver_path: str, stop_at: int = 0) -> list[dict]:
    script = os.path.join(folder, "train.py")
    with open(script, "w") as f:
        f.write(SCRIPT)
    out = os.path.join(folder, "rank%d.npz")
    proc = subprocess.run([sys.executable, script, solver_path, out, str(stop_at)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = []
    for rank in range(2):
        with np.load(out % rank) as f:
            results.append({k: f[k] for k in f.files})
    return results


@pytest.mark.parametrize("layer_wise,shared,folded", [
    (True, False, False), (False, False, False), (True, True, False), (True, False, True)])
def test_two_ranks_match_one_process_on_the_joint_batch(tmp_path, layer_wise, shared, folded):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    expected = single_process_weights(str(one), shared, folded)
    ranks = run_script(str(two), write_case(str(two), 4, layer_wise, shared, folded))
    for rank in ranks:
        assert int(rank["iter"]) == 6
        got = [rank[f"arr_{i}"] for i in range(len(expected))]
        for g, e in zip(got, expected):
            assert np.isfinite(e).all()
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    # without the averaging the ranks would have drifted apart on their own rows
    np.testing.assert_array_equal(ranks[0]["arr_0"], ranks[1]["arr_0"])


def test_a_stop_requested_by_one_rank_stops_both_after_the_same_iteration(tmp_path):
    ranks = run_script(str(tmp_path), write_case(str(tmp_path), 4, True, False), stop_at=3)
    assert [int(r["iter"]) for r in ranks] == [3, 3]


@pytest.fixture
def ranks_case(tmp_path):
    """(the single-process weights, a folder with a two-rank case, its solver path)."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    return single_process_weights(str(one), False), two, write_case(str(two), 4, True, False)


def assert_snapshot_has(folder, expected: list[np.ndarray]) -> None:
    net = caffe.Net(str(folder / "net.prototxt"), caffe.TEST,
                    weights=str(folder / "snap_iter_6.caffemodel"))
    for got, want in zip([b.data for b in net.learnable_params], expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_caffe_train_ranks_snapshot_on_rank_zero_only(ranks_case, capfd, monkeypatch):
    """The processes ``caffe train -gpu 0,1`` starts, here on the CPU (device None)."""
    monkeypatch.setenv("GLOG_minloglevel", "0")
    expected, two, solver_path = ranks_case
    args = argparse.Namespace(
        solver=solver_path, weights="", snapshot="", level=0, stage="",
        no_python_layers=False, precision="float32", sigint_effect="stop",
        sighup_effect="snapshot", progress="off", cuda_graph=False)
    spawn_ranks(train_rank, 2, args, [None, None])
    assert sorted(f for f in os.listdir(two) if f.startswith("snap")) == [
        "snap_iter_6.caffemodel", "snap_iter_6.solverstate", "snap_iter_6.solverstate.rng"]
    assert capfd.readouterr().err.count("Snapshotting to binary proto file") == 1
    assert_snapshot_has(two, expected)


def test_caffe_train_under_torchrun_is_one_rank_per_process(ranks_case):
    """``torchrun --nproc-per-node 2 -m caffe train``: the processes torchrun starts (as on
    several machines) train as the ranks of one run."""
    expected, two, solver_path = ranks_case
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "caffe", "train", "-solver", solver_path],
        capture_output=True, text=True, timeout=180, cwd=str(two),
        env={**os.environ, "GLOG_minloglevel": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Solver rank 1 of 2 (torchrun)" in proc.stderr
    assert proc.stderr.count("Snapshotting to binary proto file") == 1
    assert_snapshot_has(two, expected)


def test_a_failing_rank_is_named(tmp_path):
    args = argparse.Namespace(
        solver=str(tmp_path / "missing.prototxt"), weights="", snapshot="", level=0, stage="",
        no_python_layers=False, precision="float32", sigint_effect="stop",
        sighup_effect="snapshot", progress="off", cuda_graph=False)
    with pytest.raises(CaffeError, match="solver rank [01] failed.*missing.prototxt"):
        spawn_ranks(train_rank, 2, args, [None, None])


def test_one_rank_is_plain_training(tmp_path):
    """solver_count 1: NCCL joins nothing and changes no number."""
    plain = single_process_weights(str(tmp_path), False)
    solver = caffe.SGDSolver(write_case(str(tmp_path), 8, True, False))
    nccl = caffe.NCCL(solver, "")
    nccl.bcast()
    solver.add_callback(nccl)
    solver.net.after_backward(nccl)
    solver.step(solver.param.max_iter)
    for got, want in zip(solver.net.learnable_params, plain):
        np.testing.assert_array_equal(got.data, want)


def test_rank_outside_the_count_is_refused(tmp_path, monkeypatch):
    solver = caffe.SGDSolver(write_case(str(tmp_path), 8, True, False))
    caffe.set_solver_count(2)
    caffe.set_solver_rank(2)
    try:
        with pytest.raises(CaffeError, match="solver rank 2 is not in 0..1"):
            NCCL(solver, NCCL.new_uid())
    finally:
        caffe.set_solver_count(1)
        caffe.set_solver_rank(0)


def test_pycaffe_names():
    assert caffe.has_nccl() is True
    uid = NCCL.new_uid()
    assert isinstance(uid, bytes)  # as pycaffe's test_nccl expects on Python 3
    assert uid.startswith(b"file://") and uid != NCCL.new_uid()


def test_a_launcher_without_solver_count_is_pointed_out(tmp_path, monkeypatch, caplog):
    import logging

    solver = caffe.SGDSolver(write_case(str(tmp_path), 8, True, False))
    monkeypatch.setenv("WORLD_SIZE", "4")
    logger = logging.getLogger("caffe")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="caffe"):
            NCCL(solver, "")
    finally:
        logger.removeHandler(caplog.handler)
    assert "WORLD_SIZE is 4 but caffe.solver_count() is 1" in caplog.text
