"""HDF5Data and HDF5Output: batches across files and around the list, shuffling, multi-rank
skipping, one-batch output files, and the errors for bad sources."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import caffe
from caffe.errors import FileFormatError, LayerSetupError


def _files(tmp_path, sizes, extra=None):
    names = []
    start = 0
    for i, n in enumerate(sizes):
        name = tmp_path / f"f{i}.h5"
        with h5py.File(name, "w") as f:
            f["data"] = np.arange(start, start + n, dtype=np.float64)[:, None] * [1, -1]
            f["label"] = np.arange(start, start + n)
            for k, v in (extra or {}).get(i, {}).items():
                del f[k]
                f[k] = v
        names.append(str(name))
        start += n
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n")
    return str(tmp_path / "list.txt")


def _net(tmp_path, source, batch, extra="", tops=("data", "label"), phase=caffe.TRAIN):
    tops_txt = " ".join(f'top: "{t}"' for t in tops)
    (tmp_path / "net.prototxt").write_text(
        f'layer {{ name: "h" type: "HDF5Data" {tops_txt} hdf5_data_param {{ source: "{source}" '
        f"batch_size: {batch} {extra} }} }}")
    return caffe.Net(str(tmp_path / "net.prototxt"), phase)


def test_batches_run_across_files_and_wrap_around(tmp_path):
    net = _net(tmp_path, _files(tmp_path, [4, 3]), 3)
    seen = [net.forward()["label"].tolist() for _ in range(5)]
    assert seen == [[0, 1, 2], [3, 4, 5], [6, 0, 1], [2, 3, 4], [5, 6, 0]]
    np.testing.assert_array_equal(net.blobs["data"].data, [[5, -5], [6, -6], [0, 0]])


def test_batch_larger_than_the_data_repeats_rows(tmp_path):
    net = _net(tmp_path, _files(tmp_path, [2]), 5)
    assert net.forward()["label"].tolist() == [0, 1, 0, 1, 0]


def test_single_top(tmp_path):
    net = _net(tmp_path, _files(tmp_path, [3]), 2, tops=("label",))
    assert net.blobs["label"].shape == (2,)
    assert net.forward()["label"].tolist() == [0, 1]


def test_shuffle_serves_every_row_once_per_pass_and_follows_the_seed(tmp_path):
    source = _files(tmp_path, [4, 3])

    def run():
        caffe.set_random_seed(5)
        net = _net(tmp_path, source, 7, "shuffle: true")
        return [net.forward()["label"].tolist() for _ in range(3)]

    first = run()
    assert first == run()
    for batch in first:
        assert sorted(batch) == list(range(7))
    assert first[0] != list(range(7)) or first[1] != list(range(7))


def test_solver_rank_keeps_every_other_row_in_train(tmp_path):
    source = _files(tmp_path, [5])
    caffe.set_solver_count(2)
    caffe.set_solver_rank(1)
    try:
        train = _net(tmp_path, source, 3)
        test = _net(tmp_path, source, 3, phase=caffe.TEST)
        assert train.forward()["label"].tolist() == [1, 3, 0]
        assert train.forward()["label"].tolist() == [2, 4, 1]
        assert test.forward()["label"].tolist() == [0, 1, 2]
    finally:
        caffe.set_solver_count(1)
        caffe.set_solver_rank(0)


def test_relative_paths_fall_back_to_the_list_folder(tmp_path, monkeypatch):
    sub = tmp_path / "sub"
    sub.mkdir()
    with h5py.File(sub / "x.h5", "w") as f:
        f["data"] = np.ones((2, 3))
        f["label"] = np.zeros(2)
    (sub / "list.txt").write_text("x.h5\n")
    monkeypatch.chdir(tmp_path)
    net = _net(tmp_path, "sub/list.txt", 2)
    assert net.forward()["data"].shape == (2, 3)


@pytest.mark.parametrize("case, pattern", [
    ("missing_list", r"HDF5 list file '.*nope.txt' does not exist"),
    ("empty_list", r"lists no files"),
    ("missing_file", r"'.*gone.h5' \(line 2 of '.*list.txt'\) does not exist"),
    ("missing_dataset", r"has no dataset 'label'; its datasets are \['data'\]"),
    ("lengths", r"different numbers of rows \('data': 3, 'label': 2\)"),
    ("row_shape", r"'data' has rows of shape \(3,\), but the first file's rows are \(2,\)"),
    ("not_hdf5", r"cannot open HDF5 file"),
])
def test_bad_sources_raise_file_format_errors(tmp_path, case, pattern):
    source = str(tmp_path / "list.txt")
    good = _files(tmp_path, [3])
    if case == "missing_list":
        source = str(tmp_path / "nope.txt")
    elif case == "empty_list":
        (tmp_path / "list.txt").write_text("\n  \n")
    elif case == "missing_file":
        (tmp_path / "list.txt").write_text(f"{tmp_path / 'f0.h5'}\n{tmp_path / 'gone.h5'}\n")
    elif case == "missing_dataset":
        with h5py.File(tmp_path / "f0.h5", "a") as f:
            del f["label"]
    elif case == "lengths":
        with h5py.File(tmp_path / "f0.h5", "a") as f:
            del f["label"]
            f["label"] = np.zeros(2)
    elif case == "row_shape":
        with h5py.File(tmp_path / "g.h5", "w") as f:
            f["data"] = np.zeros((2, 3))
            f["label"] = np.zeros(2)
        (tmp_path / "list.txt").write_text(f"{tmp_path / 'f0.h5'}\n{tmp_path / 'g.h5'}\n")
    elif case == "not_hdf5":
        (tmp_path / "bad.h5").write_bytes(b"not an hdf5 file")
        (tmp_path / "list.txt").write_text(f"{tmp_path / 'bad.h5'}\n")
    assert good
    with pytest.raises(FileFormatError, match=pattern) as info:
        net = _net(tmp_path, source, 2)
        for _ in range(3):
            net.forward()
    assert "Layer 'h' (HDF5Data)" in str(info.value)


def test_transform_param_and_zero_batch_are_refused(tmp_path):
    source = _files(tmp_path, [3])
    with pytest.raises(LayerSetupError, match="does not transform data"):
        caffe.Net(caffe.proto.caffe_pb2.NetParameter(layer=[caffe.proto.caffe_pb2.LayerParameter(
            name="h", type="HDF5Data", top=["data", "label"],
            hdf5_data_param={"source": source, "batch_size": 2},
            transform_param={"scale": 2.0})]), caffe.TRAIN)
    with pytest.raises(LayerSetupError, match="batch_size must be positive"):
        _net(tmp_path, source, 0)


# ---------------------------------------------------------------------------- HDF5Output
def _output_net(tmp_path, name="out.h5"):
    (tmp_path / "o.prototxt").write_text(
        'layer { name: "in" type: "Input" top: "data" top: "label" input_param { shape { dim: 2 '
        'dim: 3 } shape { dim: 2 } } }\n'
        f'layer {{ name: "o" type: "HDF5Output" bottom: "data" bottom: "label" '
        f'hdf5_output_param {{ file_name: "{tmp_path / name}" }} }}')
    return caffe.Net(str(tmp_path / "o.prototxt"), caffe.TEST)


def test_output_writes_legacy_4d_float_datasets_once(tmp_path):
    net = _output_net(tmp_path)
    assert (tmp_path / "out.h5").exists()  # created (empty) at set-up, as Caffe's H5Fcreate
    net.blobs["data"].data[...] = np.arange(6).reshape(2, 3)
    net.blobs["label"].data[...] = [7, 8]
    net.forward()
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert f["data"].dtype == np.float32 and f["data"].shape == (2, 3, 1, 1)
        np.testing.assert_array_equal(f["label"][()].ravel(), [7, 8])
        assert f["label"].shape == (2, 1, 1, 1)
    with pytest.raises(FileFormatError, match="already holds a batch"):
        net.forward()


def test_output_to_an_unwritable_place_names_the_file(tmp_path):
    with pytest.raises(FileFormatError, match="cannot create HDF5 file '.*nodir/out.h5'"):
        _output_net(tmp_path, "nodir/out.h5")


def test_datasets_that_merely_claim_a_huge_size_are_refused(tmp_path):
    with h5py.File(tmp_path / "big.h5", "w") as f:
        f.create_dataset("data", shape=(10**6, 10**5), dtype="f4", chunks=(1, 10**5))
        f["label"] = np.zeros(10**6)
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'big.h5'}\n")
    with pytest.raises(FileFormatError, match=r"'data' declares shape \(1000000, 100000\).* "
                                              "stores only 0 bytes"):
        _net(tmp_path, str(tmp_path / "list.txt"), 2)
