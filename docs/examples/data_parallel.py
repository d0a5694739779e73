"""Data-parallel training as pycaffe's python/train.py does it, on two CPU processes joined
through Gloo (docs/porting.md): each rank reads its own half of the rows, the diffs are
averaged before every update, and both ranks end with the same weights."""

import os
import tempfile
from multiprocessing import Process

import h5py
import numpy as np

import caffe

NET = """
layer { name: "data" type: "HDF5Data" top: "x" top: "y"
  hdf5_data_param { source: "%s" batch_size: 4 } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "pred"
  inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "pred" bottom: "y" top: "loss" }
"""
SOLVER = """net: "%s" base_lr: 0.1 momentum: 0.9 lr_policy: "fixed" max_iter: 20
random_seed: 1 display: 0 snapshot_after_train: false"""


def solve(proto, uid, rank, count, out):
    caffe.set_mode_cpu()
    caffe.set_solver_count(count)
    caffe.set_solver_rank(rank)
    caffe.set_multiprocess(True)
    solver = caffe.SGDSolver(proto)
    nccl = caffe.NCCL(solver, uid)
    nccl.bcast()  # every rank starts from rank 0's weights
    solver.add_callback(nccl)
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(nccl)
    solver.step(solver.param.max_iter)
    np.save(out % rank, solver.net.params["ip"][0].data)


if __name__ == "__main__":
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: the loopback interface
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((32, 3)).astype(np.float32)
        with h5py.File(os.path.join(tmp, "d.h5"), "w") as f:
            f["x"], f["y"] = x, x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
        with open(os.path.join(tmp, "list.txt"), "w") as f:
            f.write(os.path.join(tmp, "d.h5") + "\n")
        with open(os.path.join(tmp, "net.prototxt"), "w") as f:
            f.write(NET % os.path.join(tmp, "list.txt"))
        with open(os.path.join(tmp, "solver.prototxt"), "w") as f:
            f.write(SOLVER % os.path.join(tmp, "net.prototxt"))
        uid = caffe.NCCL.new_uid()
        out = os.path.join(tmp, "w%d.npy")
        procs = [Process(target=solve, args=(os.path.join(tmp, "solver.prototxt"), uid, r, 2,
                                             out)) for r in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        assert all(p.exitcode == 0 for p in procs)
        w0, w1 = np.load(out % 0), np.load(out % 1)
        np.testing.assert_array_equal(w0, w1)
        print("both ranks learned", w0.ravel().round(2), "(the truth is [1, -2, 0.5])")
