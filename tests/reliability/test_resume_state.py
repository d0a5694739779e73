"""The resume state saved with snapshots (random generators, data positions): where it is
kept in each snapshot format, that a plain restore ignores it as Caffe does, old snapshots
without it, hostile or mismatched ones, and prefetching layers that resume from the batch the
net consumes next (in one process)."""

from __future__ import annotations

import base64
import json
import logging
import os

import h5py
import numpy as np
import pytest
import reliakit
from google.protobuf import text_format
from PIL import Image

import caffe
from caffe.errors import FileFormatError
from caffe.proto import caffe_pb2
from caffe.solvers import resume

NET = """
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 6 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def _hdf5_net(tmp, shuffle: bool = True) -> str:
    rng = np.random.default_rng(0)
    path = os.path.join(tmp, "rows.h5")
    with h5py.File(path, "w") as f:
        f["data"] = rng.standard_normal((7, 6)).astype(np.float32)
        f["label"] = rng.integers(0, 3, 7).astype(np.float32)
    listing = os.path.join(tmp, "list.txt")
    with open(listing, "w") as f:
        f.write(path + "\n")
    head = (f'layer {{ name: "data" type: "HDF5Data" top: "data" top: "label" '
            f'hdf5_data_param {{ source: "{listing}" batch_size: 3 '
            f'shuffle: {str(shuffle).lower()} }} }}')
    return head + NET[NET.index('layer { name: "ip"'):]


def _solver(tmp, net: str = NET, hdf5: bool = False):
    caffe.set_mode_cpu()
    sp = reliakit.solver_param(net, os.path.join(str(tmp), "snap"), hdf5=hdf5)
    return caffe.get_solver(sp)


def _snapshot(tmp, net: str = NET, hdf5: bool = False, iters: int = 2) -> str:
    solver = _solver(tmp, net, hdf5)
    solver.step(iters)
    solver.snapshot()
    return f"{tmp}/snap_iter_{iters}.solverstate" + (".h5" if hdf5 else "")


@pytest.fixture
def log_lines():
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record) -> None:
            lines.append(record.getMessage())

    handler, level = Lines(), caffe._common.LOG.level
    caffe._common.LOG.addHandler(handler)
    caffe._common.LOG.setLevel(logging.INFO)
    yield lines
    caffe._common.LOG.removeHandler(handler)
    caffe._common.LOG.setLevel(level)


def _losses(solver, n: int) -> list[float]:
    return reliakit.record(solver, n)


# ---------------------------------------------------------------------------- formats
def test_binary_snapshot_writes_a_json_sidecar(tmp_path):
    state = _snapshot(tmp_path)
    doc = json.loads(open(resume.sidecar_path(state), "rb").read())
    assert doc["format"] == resume.FORMAT and doc["iter"] == 2
    assert set(doc["rng"]) == {"caffe", "torch"}
    assert doc["layers"] == []  # DummyData and Dropout use the global generator only


def test_hdf5_snapshot_carries_the_state_in_a_dataset(tmp_path):
    state = _snapshot(tmp_path, _hdf5_net(str(tmp_path)), hdf5=True)
    assert not os.path.exists(resume.sidecar_path(state))
    with h5py.File(state, "r") as f:
        assert {"iter", "learned_net", "current_step", "history"} <= set(f)
        doc = json.loads(f[resume.HDF5_DATASET][()].tobytes())
    (entry,) = doc["layers"]
    assert (entry["name"], entry["type"]) == ("data", "HDF5Data")
    assert entry["state"]["row"] == 6 and sorted(entry["state"]["row_order"]) == list(range(7))


@pytest.mark.parametrize("hdf5", [False, True])
def test_restore_in_the_same_process_repeats_the_run(tmp_path, hdf5):
    net = _hdf5_net(str(tmp_path))
    straight = _solver(tmp_path, net, hdf5)
    expected = _losses(straight, 5)
    state = _snapshot(tmp_path, net, hdf5, iters=2)
    solver = _solver(tmp_path, net, hdf5)
    solver.step(1)  # moves the data and the generators on: the restore must undo it
    solver.restore(state, exact=True)
    assert _losses(solver, 3) == expected[2:]


@pytest.mark.parametrize("hdf5", [False, True])
def test_a_plain_restore_starts_the_data_again_as_caffe_does(tmp_path, hdf5, log_lines):
    net = _hdf5_net(str(tmp_path), shuffle=False)
    first = _solver(tmp_path, net, hdf5)
    first.step(1)
    batch0 = first.net.blobs["data"].data.copy()
    first.step(1)
    first.snapshot()
    state = f"{tmp_path}/snap_iter_2.solverstate" + (".h5" if hdf5 else "")
    if not hdf5:  # Caffe never reads the sidecar: a plain restore does not either
        with open(resume.sidecar_path(state), "wb") as f:
            f.write(b"not json")
    solver = _solver(tmp_path, net, hdf5)
    solver.restore(state)
    assert solver.iter == 2 and solver.current_step == first.current_step
    for a, b in zip(solver.history, first.history):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(solver.net.params["ip"][0].data,
                                  first.net.params["ip"][0].data)
    solver.step(1)  # rows 0-2 again, where the uninterrupted run reads rows 6, 0, 1
    np.testing.assert_array_equal(solver.net.blobs["data"].data, batch0)
    assert any("data layers start again at their first batch" in line for line in log_lines)


def test_a_layer_state_that_is_not_json_is_named(tmp_path, monkeypatch):
    solver = _solver(tmp_path)
    monkeypatch.setattr(type(solver.net.layers[0]), "state_dict",
                        lambda self: {"seen": np.arange(3)})
    with pytest.raises(caffe.errors.SolverError, match=r"layer 'data' \(DummyData\).*JSON"):
        solver.snapshot()


# ---------------------------------------------------------------------------- old snapshots
def test_missing_sidecar_resumes_as_before_with_one_info_line(tmp_path, log_lines):
    state = _snapshot(tmp_path)
    os.remove(resume.sidecar_path(state))
    solver = _solver(tmp_path)
    solver.restore(state, exact=True)
    assert solver.iter == 2
    notes = [line for line in log_lines if "no saved random state" in line]
    assert len(notes) == 1 and state in notes[0]
    solver.step(1)


def test_hdf5_state_without_the_dataset_resumes_as_before(tmp_path, log_lines):
    state = _snapshot(tmp_path, hdf5=True)
    with h5py.File(state, "a") as f:
        del f[resume.HDF5_DATASET]
    solver = _solver(tmp_path, hdf5=True)
    solver.restore(state, exact=True)
    assert solver.iter == 2 and any("no saved random state" in line for line in log_lines)


# ---------------------------------------------------------------------------- bad sidecars
def _doc(state: str) -> dict:
    with open(resume.sidecar_path(state), "rb") as f:
        return json.loads(f.read())


def _edit(doc: dict, how: str) -> bytes:
    if how == "not json":
        return b"\x00{not json"
    if how == "deep":
        return b"[" * 100000 + b"]" * 100000
    if how == "other format":
        doc["format"] = "pickle"
    elif how == "version":
        doc["version"] = 99
    elif how == "iteration":
        doc["iter"] = 5
    elif how == "bad base64":
        doc["rng"]["caffe"] = "%%%"
    elif how == "short generator":
        doc["rng"]["caffe"] = base64.b64encode(b"abc").decode()
    elif how == "garbage generator":
        doc["rng"]["caffe"] = base64.b64encode(b"\xff" * 5056).decode()
    elif how == "layer list":
        doc["layers"] = {"data": 1}
    elif how == "other net":
        doc["layers"] = [{"index": 0, "name": "conv9", "type": "Data", "state": {}}]
    elif how == "row out of range":
        doc["layers"][0]["state"]["row"] = 10**30
    elif how == "not a permutation":
        doc["layers"][0]["state"]["row_order"] = [0] * 7
    elif how == "wrong type":
        doc["layers"][0]["state"]["file_order"] = "0"
    elif how == "extra key":
        doc["layers"][0]["state"]["evil"] = 1
    return json.dumps(doc).encode()


@pytest.mark.parametrize("how", [
    "not json", "deep", "other format", "version", "iteration", "bad base64",
    "short generator", "garbage generator", "layer list", "other net", "row out of range",
    "not a permutation", "wrong type", "extra key"])
def test_malformed_sidecar_names_the_file(tmp_path, how):
    net = _hdf5_net(str(tmp_path))
    state = _snapshot(tmp_path, net)
    sidecar = resume.sidecar_path(state)
    data = _edit(_doc(state), how)
    with open(sidecar, "wb") as f:
        f.write(data)
    solver = _solver(tmp_path, net)
    with pytest.raises(FileFormatError, match="resume state '" + sidecar):
        solver.restore(state, exact=True)


def test_oversized_sidecar_is_refused_before_reading(tmp_path, monkeypatch):
    state = _snapshot(tmp_path)
    monkeypatch.setattr(resume, "MAX_BYTES", 16)
    with pytest.raises(FileFormatError, match="more than the 16"):
        _solver(tmp_path).restore(state, exact=True)


# ---------------------------------------------------------------------------- prefetching
def _lmdb_net(tmp) -> str:
    path = reliakit.tiny_lmdb(tmp, 5, lambda i, rng: i)
    return f"""
layer {{ name: "data" type: "Data" top: "data" top: "label"
  transform_param {{ mirror: true crop_size: 3 }}
  data_param {{ source: "{path}" backend: LMDB batch_size: 2 prefetch: 4 }} }}
"""


def _image_net(tmp) -> str:
    rng = np.random.default_rng(2)
    lines = []
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(f"{tmp}/{i}.png")
        lines.append(f"{tmp}/{i}.png {i}")
    with open(f"{tmp}/images.txt", "w") as f:
        f.write("\n".join(lines) + "\n")
    return f"""
layer {{ name: "data" type: "ImageData" top: "data" top: "label"
  transform_param {{ mirror: true crop_size: 3 }}
  image_data_param {{ source: "{tmp}/images.txt" batch_size: 2 shuffle: true }}
  data_param {{ prefetch: 4 }} }}
"""


def _window_net(tmp) -> str:
    img = np.random.default_rng(3).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(img).save(f"{tmp}/w.png")
    windows = ["1 0.9 0 0 5 6", "2 0.8 3 2 9 11", "0 0.1 1 1 4 4", "0 0.0 5 6 9 11"]
    with open(f"{tmp}/windows.txt", "w") as f:
        f.write(f"# 0\nw.png\n3\n12\n10\n{len(windows)}\n" + "\n".join(windows) + "\n")
    return f"""
layer {{ name: "data" type: "WindowData" top: "data" top: "label"
  transform_param {{ mirror: true crop_size: 4 }}
  window_data_param {{ source: "{tmp}/windows.txt" root_folder: "{tmp}/" batch_size: 4
                       fg_fraction: 0.5 }}
  data_param {{ prefetch: 4 }} }}
"""


@pytest.mark.parametrize("make", [_lmdb_net, _image_net, _window_net])
def test_prefetching_layer_resumes_from_the_next_consumed_batch(tmp_path, make):
    text = make(str(tmp_path))
    caffe.set_random_seed(3)
    net = _train_net(text)
    layer = net.layers[0]
    first = [_batch(net) for _ in range(2)]
    saved = json.loads(json.dumps(layer.state_dict()))
    later = [_batch(net) for _ in range(4)]
    caffe.set_random_seed(4)  # other seeds: the state alone must decide
    other = _train_net(text)
    _batch(other)
    other.layers[0].load_state_dict(saved)
    again = [_batch(other) for _ in range(4)]
    for (d1, l1), (d2, l2) in zip(later, again):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)
    assert not all(np.array_equal(d, first[0][0]) for d, _ in later)
    for n in (net, other):
        n.layers[0].close()


def test_saved_position_is_the_consumers_not_the_readers(tmp_path):
    net = _train_net(_lmdb_net(str(tmp_path)))
    layer = net.layers[0]
    labels = [_batch(net)[1].tolist() for _ in range(2)]
    assert labels == [[0, 1], [2, 3]]
    assert layer.state_dict()["items"] == {"index": 4, "offset": 4}
    layer.close()


def _train_net(text: str) -> caffe.Net:
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TRAIN)


def _batch(net) -> tuple[np.ndarray, np.ndarray]:
    out = net.forward()
    return out["data"].copy(), out["label"].copy()


def test_bad_prefetch_state_leaves_the_layer_working(tmp_path):
    net = _train_net(_lmdb_net(str(tmp_path)))
    layer = net.layers[0]
    with pytest.raises(ValueError, match="database record index"):
        layer.load_state_dict({"items": {"index": -1, "offset": 0},
                               "batcher": layer.state_dict()["batcher"]})
    assert _batch(net)[1].tolist() == [0, 1]
    layer.close()
