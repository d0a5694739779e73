"""Soak test (slow; ``pytest -m slow tests/reliability/test_soak.py``): train for thousands of
iterations (``CAFFE_SOAK_ITERS``, default 5000) with a prefetching LMDB Data layer (random
crops and mirrors), Dropout, a test net and a snapshot every 500 iterations, in a child process
that samples its resident memory. Memory must stay flat after warm-up, no thread may outlive
the solver, and the process must exit promptly."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import reliakit

from caffe.data.db import open_writer
from caffe.io import array_to_datum

ITERS = int(os.environ.get("CAFFE_SOAK_ITERS", "5000"))
SAMPLE_EVERY = max(ITERS // 40, 10)
#: growth of resident memory allowed between the first and the last quarter (after warm-up)
FLAT_MB = 24.0


def _net(source: str) -> str:
    return f"""
name: "soak"
layer {{ name: "data" type: "Data" top: "data" top: "label"
  transform_param {{ mirror: true crop_size: 6 scale: 0.0039 }}
  data_param {{ source: "{source}" backend: LMDB batch_size: 8 prefetch: 4 }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "drop" type: "Dropout" bottom: "pool" top: "pool" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""


def soak(sp_bytes: bytes, out: str) -> None:
    """Train in steps, recording resident memory and live threads; then drop the solver."""
    import gc

    import caffe
    from caffe.proto import caffe_pb2

    reliakit._quiet()
    page = os.sysconf("SC_PAGE_SIZE")

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page / 2**20

    solver = caffe.get_solver(caffe_pb2.SolverParameter.FromString(sp_bytes))
    rss, threads = [], []
    while solver.iter < ITERS:
        solver.step(SAMPLE_EVERY)
        gc.collect()
        rss.append(rss_mb())
        threads.append(len(reliakit.live_threads()))
    del solver
    gc.collect()
    left = reliakit.live_threads()
    np.savez(out, rss=np.asarray(rss), threads=np.asarray(threads),
             left=np.asarray(len(left)))


@pytest.mark.slow
def test_soak_memory_flat_and_threads_stop(tmp_path):
    tmp = str(tmp_path)
    rng = np.random.default_rng(3)
    source = os.path.join(tmp, "lmdb")
    with open_writer(source, "lmdb") as w:
        for i in range(50):
            img = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
            w.put(f"{i:08d}", array_to_datum(img, int(rng.integers(0, 3))).SerializeToString())
    sp = reliakit.solver_param(_net(source), os.path.join(tmp, "soak"), snapshot=500,
                               max_iter=ITERS)
    sp.test_iter.append(2)
    sp.test_interval = 1000
    out = os.path.join(tmp, "soak.npz")
    ctx = reliakit.context()
    start = time.monotonic()
    p = ctx.Process(target=soak, args=(sp.SerializeToString(), out))
    p.start()
    p.join(3600)
    assert not p.is_alive(), "the soak run did not finish within an hour"
    assert p.exitcode == 0
    result = reliakit.load(out)
    rss, threads = result["rss"], result["threads"]
    warm = len(rss) // 5
    first, last = np.median(rss[warm:warm + len(rss) // 4]), np.median(rss[-len(rss) // 4:])
    print(f"soak: {ITERS} iterations in {time.monotonic() - start:.0f} s; resident memory "
          f"{rss[0]:.0f} MB at first, {first:.1f} MB after warm-up, {last:.1f} MB at the end; "
          f"threads {threads.min()}-{threads.max()}")
    assert last - first < FLAT_MB, f"memory grew from {first:.1f} MB to {last:.1f} MB"
    assert threads[warm:].max() <= threads[:warm + 1].max(), "threads kept being added"
    assert int(result["left"]) == 0, "threads were still running after the solver was deleted"
    snaps = reliakit.snapshots(tmp)
    assert max(snaps) == ITERS and all(len(f) == 2 for f in snaps.values())
