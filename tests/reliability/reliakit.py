"""Training processes for the reliability tests: solvers on small nets, run in child processes
started from a forkserver that has imported caffe once (so each child starts in a fraction of
a second), and the helpers that look at what they leave on disk."""

from __future__ import annotations

import glob
import multiprocessing
import os
import re
import signal
import threading

import numpy as np
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2


def tiny_lmdb(tmp: str, count: int, label) -> str:
    """An LMDB of ``count`` random 1x4x4 uint8 Datums in ``tmp``/lmdb; ``label(i, rng)``
    gives record i's label. Returns its path."""
    from caffe.data.db import open_writer
    from caffe.io import array_to_datum

    rng = np.random.default_rng(1)
    path = os.path.join(tmp, "lmdb")
    with open_writer(path, "lmdb") as w:
        for i in range(count):
            img = rng.integers(0, 256, (1, 4, 4), dtype=np.uint8)
            w.put(f"{i:08d}", array_to_datum(img, label(i, rng)).SerializeToString())
    return path


def context() -> multiprocessing.context.BaseContext:
    """A forkserver context (spawn where fork is unavailable) that preloads caffe."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["caffe", "reliakit"])
    return ctx


# ---------------------------------------------------------------------------- solvers
def solver_param(net: str, prefix: str, solver_type: str = "SGD", snapshot: int = 0,
                 hdf5: bool = False, max_iter: int = 10**9) -> caffe_pb2.SolverParameter:
    sp = caffe_pb2.SolverParameter(
        type=solver_type, base_lr=0.05, lr_policy="step", gamma=0.5, stepsize=3,
        max_iter=max_iter, snapshot=snapshot, snapshot_prefix=prefix, random_seed=7,
        display=0, weight_decay=1e-3)
    if solver_type in ("SGD", "Nesterov"):
        sp.momentum = 0.9
    if hdf5:
        sp.snapshot_format = caffe_pb2.SolverParameter.HDF5
    text_format.Merge(net, sp.net_param)
    return sp


def _quiet() -> None:
    caffe.set_mode_cpu()
    import torch

    torch.set_num_threads(1)


# ---------------------------------------------------------------------------- kill test
#: one InnerProduct of 640 x 1000 weights: a snapshot (weights and momentum) is ~5 MB and
#: takes most of each iteration, so kills land in it
BIG_NET = """
name: "big"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 1000 } shape { dim: 2 dim: 640 }
    data_filler { type: "constant" value: 0.01 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 640 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def train_until_killed(prefix: str, hdf5: bool, resume: str, crash_at: str, crash_call: int,
                       ) -> None:
    """Train with a snapshot after every iteration until killed, resuming from ``resume``
    when given. With ``crash_at`` ('fsync' or 'replace'), the process SIGKILLs itself on the
    ``crash_call``-th call of that function: inside a snapshot write, after the data went to
    the temporary file and before (or while) it is renamed."""
    _quiet()
    if crash_at:
        calls = [0]
        real = getattr(os, crash_at)

        def crash(*args, **kwargs):
            calls[0] += 1
            if calls[0] >= crash_call:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        setattr(os, crash_at, crash)
    solver = caffe.get_solver(solver_param(BIG_NET, prefix, snapshot=1, hdf5=hdf5))
    if resume:
        solver.restore(resume)
    solver.step(10**9)


_SNAPSHOT = re.compile(r"_iter_(\d+)\.(caffemodel|solverstate)(\.h5)?$")


def snapshots(folder: str) -> dict[int, dict[str, str]]:
    """{iteration: {'caffemodel': path, 'solverstate': path}} of the files under their final
    names (temporary files are ignored)."""
    out: dict[int, dict[str, str]] = {}
    for path in glob.glob(os.path.join(folder, "*")):
        m = _SNAPSHOT.search(os.path.basename(path))
        if m and not os.path.basename(path).startswith(".tmp-"):
            out.setdefault(int(m.group(1)), {})[m.group(2)] = path
    return out


def latest_complete(folder: str) -> tuple[int, str] | None:
    """(iteration, solver state path) of the newest snapshot with both files."""
    done = [(it, files["solverstate"]) for it, files in snapshots(folder).items()
            if len(files) == 2]
    return max(done) if done else None


# ---------------------------------------------------------------------------- exact resume
def record(solver, iters: int) -> list[float]:
    """Losses of ``iters`` single steps."""
    losses = []
    for _ in range(iters):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    return losses


def weights(solver) -> dict[str, np.ndarray]:
    return {f"{name}/{j}": blob.data.copy() for name, blobs in solver.net.params.items()
            for j, blob in enumerate(blobs)}


def _finish(solver, out: str, losses: list[float]) -> None:
    arrays = weights(solver)
    arrays["losses"] = np.asarray(losses, np.float64)
    arrays["iter"] = np.asarray(solver.iter)
    for net in [solver.net, *solver.test_nets]:
        for layer in net.layers:
            close = getattr(layer, "close", None)
            if callable(close):
                close()
    np.savez(out, **arrays)


def train_straight(sp_bytes: bytes, iters: int, out: str, cwd: str) -> None:
    """Train ``iters`` iterations in one go; save losses and weights to ``out`` (.npz)."""
    _quiet()
    os.chdir(cwd)
    sp = caffe_pb2.SolverParameter.FromString(sp_bytes)
    solver = caffe.get_solver(sp)
    _finish(solver, out, record(solver, iters))


def train_and_snapshot(sp_bytes: bytes, iters: int, out: str, cwd: str) -> None:
    """Train ``iters`` iterations, snapshot and stop."""
    _quiet()
    os.chdir(cwd)
    solver = caffe.get_solver(caffe_pb2.SolverParameter.FromString(sp_bytes))
    losses = record(solver, iters)
    solver.snapshot()
    _finish(solver, out, losses)


def resume_and_train(sp_bytes: bytes, state: str, iters: int, out: str, cwd: str) -> None:
    """Restore ``state`` in this fresh process and train ``iters`` more iterations."""
    _quiet()
    os.chdir(cwd)
    solver = caffe.get_solver(caffe_pb2.SolverParameter.FromString(sp_bytes))
    solver.restore(state, exact=True)
    _finish(solver, out, record(solver, iters))


def run_child(ctx, target, *args, timeout: float = 120.0) -> None:
    """Run ``target(*args)`` in a child process; raise if it fails or hangs."""
    p = ctx.Process(target=target, args=args)
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        raise AssertionError(f"{target.__name__} did not finish within {timeout} s")
    if p.exitcode != 0:
        raise AssertionError(f"{target.__name__} failed with exit code {p.exitcode}")


def load(out: str) -> dict[str, np.ndarray]:
    with np.load(out, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def live_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t is not threading.main_thread()]
