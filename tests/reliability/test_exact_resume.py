"""Exact resume on the CPU: training N iterations gives the same losses and weights, bit for bit,
as training k, snapshotting, restoring in a new process and training N - k. Covered: the
solver's own state (momentum / Adam history, lr policy step), the random state behind Dropout
and random DummyData, and the position and random state of the data layers (HDF5Data with
shuffling, Data from LMDB with prefetching, random crops and mirrors, ImageData with
shuffling)."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import reliakit

N, K = 6, 2

TAIL = """
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" }
                        bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
%s
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
DROPOUT = 'layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" }'


def _constant_data(tmp) -> str:
    return """
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 6 } shape { dim: 4 }
    data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: 2 } } }
""" + TAIL % ""


def _random_data_dropout(tmp) -> str:
    return """
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 6 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
""" + TAIL % DROPOUT


def _hdf5_data(tmp) -> str:
    rng = np.random.default_rng(0)
    names = []
    for i, rows in enumerate((5, 7)):
        path = os.path.join(tmp, f"part{i}.h5")
        with h5py.File(path, "w") as f:
            f["data"] = rng.standard_normal((rows, 6)).astype(np.float32)
            f["label"] = rng.integers(0, 3, rows).astype(np.float32)
        names.append(path)
    listing = os.path.join(tmp, "h5list.txt")
    with open(listing, "w") as f:
        f.write("\n".join(names) + "\n")
    return f"""
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param {{ source: "{listing}" batch_size: 4 shuffle: true }} }}
""" + TAIL % DROPOUT


def _lmdb_data(tmp) -> str:
    path = reliakit.tiny_lmdb(tmp, 11, lambda i, rng: int(rng.integers(0, 3)))
    return f"""
layer {{ name: "data" type: "Data" top: "data" top: "label"
  transform_param {{ mirror: true crop_size: 3 scale: 0.0039 }}
  data_param {{ source: "{path}" backend: LMDB batch_size: 4 prefetch: 3 }} }}
""" + TAIL % DROPOUT


def _image_data(tmp) -> str:
    from PIL import Image

    rng = np.random.default_rng(2)
    lines = []
    for i in range(7):
        path = os.path.join(tmp, f"img{i}.png")
        Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).save(path)
        lines.append(f"{path} {i % 3}")
    listing = os.path.join(tmp, "images.txt")
    with open(listing, "w") as f:
        f.write("\n".join(lines) + "\n")
    return f"""
layer {{ name: "data" type: "ImageData" top: "data" top: "label"
  transform_param {{ mirror: true crop_size: 3 }}
  image_data_param {{ source: "{listing}" batch_size: 3 shuffle: true is_color: true }} }}
""" + TAIL % DROPOUT


CASES = [
    pytest.param(_constant_data, "SGD", False, id="solver-state-sgd"),
    pytest.param(_constant_data, "Adam", True, id="solver-state-adam-hdf5"),
    pytest.param(_random_data_dropout, "SGD", False, id="dropout-random-dummydata"),
    pytest.param(_hdf5_data, "SGD", False, id="hdf5data-shuffle"),
    pytest.param(_lmdb_data, "Nesterov", False, id="lmdb-prefetch-crop-mirror"),
    pytest.param(_image_data, "SGD", True, id="imagedata-shuffle"),
]


@pytest.mark.parametrize("make_net, solver_type, hdf5", CASES)
def test_resume_in_new_process_is_bit_identical(tmp_path, make_net, solver_type, hdf5):
    tmp = str(tmp_path)
    net = make_net(tmp)
    prefix = os.path.join(tmp, "snap")
    sp = reliakit.solver_param(net, prefix, solver_type, hdf5=hdf5, max_iter=N)
    sp_bytes = sp.SerializeToString()
    ctx = reliakit.context()
    straight, first, second = (os.path.join(tmp, f"{n}.npz") for n in ("a", "b", "c"))
    reliakit.run_child(ctx, reliakit.train_straight, sp_bytes, N, straight, tmp)
    reliakit.run_child(ctx, reliakit.train_and_snapshot, sp_bytes, K, first, tmp)
    state = f"{prefix}_iter_{K}.solverstate" + (".h5" if hdf5 else "")
    reliakit.run_child(ctx, reliakit.resume_and_train, sp_bytes, state, N - K, second, tmp)
    a, b, c = reliakit.load(straight), reliakit.load(first), reliakit.load(second)
    assert int(c["iter"]) == N
    resumed = np.concatenate([b["losses"], c["losses"]])
    assert a["losses"].tolist() == resumed.tolist(), "losses differ after resuming"
    for key in a:
        if "/" in key:
            assert np.array_equal(a[key], c[key]), f"parameter {key} differs after resuming"
