"""Atomic snapshots: a training process that snapshots after every iteration is SIGKILLed again
and again, at random moments and at chosen points inside a snapshot write (after the data went
to the temporary file, before the rename). After every kill, every weights and solver-state
file under its final name loads, and training resumes from the newest complete snapshot."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
import reliakit

import caffe
from caffe import model_io

#: (how the process dies, which call of that function) for each round; "" is an external
#: SIGKILL at a random moment once the child is snapshotting
ROUNDS = [("", 0), ("fsync", 1), ("", 0), ("replace", 2), ("", 0), ("fsync", 3), ("", 0),
          ("replace", 4), ("", 0)]


def _stamps(folder: str) -> set[tuple[str, int]]:
    return {(name, os.stat(os.path.join(folder, name)).st_mtime_ns)
            for name in os.listdir(folder)}


def _wait_for_a_write(folder: str, before: set, proc, timeout: float = 60.0) -> bool:
    """Wait until the child has written a snapshot file (or died)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.is_alive():
        try:
            if any(not name.startswith(".tmp-") for name, _ in _stamps(folder) - before):
                return True
        except FileNotFoundError:  # a temporary file renamed while listing
            pass
        time.sleep(0.005)
    return False


def _check_every_file_loads(folder: str, solver) -> None:
    for it, found in sorted(reliakit.snapshots(folder).items()):
        model_io.copy_trained_layers(solver.net, found["caffemodel"]) \
            if "caffemodel" in found else None
        if "solverstate" in found:
            solver.restore(found["solverstate"])
            assert solver.iter == it


@pytest.mark.parametrize("hdf5", [False, True], ids=["binaryproto", "hdf5"])
def test_sigkill_during_snapshots_leaves_loadable_snapshots(tmp_path, hdf5):
    folder = str(tmp_path)
    prefix = os.path.join(folder, "big")
    ctx = reliakit.context()
    rng = random.Random(1234 + hdf5)
    checker = caffe.get_solver(reliakit.solver_param(reliakit.BIG_NET, prefix, hdf5=hdf5))
    progress = []
    interrupted_writes = 0
    for crash_at, crash_call in ROUNDS:
        latest = reliakit.latest_complete(folder)
        proc = ctx.Process(target=reliakit.train_until_killed,
                           args=(prefix, hdf5, latest[1] if latest else "", crash_at,
                                 crash_call))
        before = _stamps(folder)
        proc.start()
        if not crash_at:
            assert _wait_for_a_write(folder, before, proc), \
                f"the training process wrote no snapshot (exit code {proc.exitcode})"
            time.sleep(rng.uniform(0.0, 0.4))
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
        proc.join(60)
        assert proc.exitcode == -signal.SIGKILL, f"unexpected exit code {proc.exitcode}"
        interrupted_writes += sum(name.startswith(".tmp-") for name, _ in
                                  _stamps(folder) - before)
        _check_every_file_loads(folder, checker)
        latest = reliakit.latest_complete(folder)
        if latest is not None:
            checker.restore(latest[1])
            assert checker.iter == latest[0]
            progress.append(latest[0])
    assert progress and progress[-1] > 1, "training never got past its first snapshot"
    assert progress == sorted(progress)
    # the chosen crash points kill the process with a temporary file half-way to its name
    assert interrupted_writes >= 4
