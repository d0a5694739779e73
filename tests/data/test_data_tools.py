"""The dataset tools: convert_imageset (round trip through a Data layer, keys, flags),
compute_image_mean and convert_mnist_data, run as ``caffe <command>``."""

from __future__ import annotations

import gzip
import logging

import lmdb
import numpy as np
import pytest
from PIL import Image

import caffe
from caffe.proto import caffe_pb2
from caffe.tools.cli import main

from layer_rows.data import bilinear

RGB = np.random.default_rng(9).integers(0, 256, (4, 5, 6, 3)).astype(np.uint8)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "img").mkdir()
    for i, img in enumerate(RGB):
        Image.fromarray(img).save(tmp_path / "img" / f"im {i}.png")  # a space in the name
    (tmp_path / "list.txt").write_text("".join(f"im {i}.png {10 + i}\n" for i in range(4)))
    return tmp_path


def _convert(folder, *flags, db="db"):
    argv = ["convert_imageset", *flags, str(folder / "img") + "/", str(folder / "list.txt"),
            str(folder / db)]
    assert main(argv) == 0
    return str(folder / db)


def _read(db, batch=4, transform=""):
    p = caffe_pb2.NetParameter()
    layer = p.layer.add(name="d", type="Data", top=["data", "label"])
    layer.data_param.source, layer.data_param.batch_size = db, batch
    layer.data_param.backend = caffe_pb2.DataParameter.LMDB
    if transform:
        from google.protobuf import text_format

        text_format.Merge(transform, layer.transform_param)
    return caffe.Net(p, caffe.TEST).forward()


def test_round_trip_gives_back_the_exact_pixels_and_labels(folder):
    out = _read(_convert(folder))
    np.testing.assert_array_equal(out["data"], RGB[..., ::-1].transpose(0, 3, 1, 2))  # BGR
    np.testing.assert_array_equal(out["label"], [10, 11, 12, 13])


def test_keys_follow_caffe(folder):
    env = lmdb.open(_convert(folder), readonly=True, lock=False)
    with env.begin() as txn:
        keys = [k.decode() for k, _ in txn.cursor()]
    env.close()
    assert keys == [f"{i:08d}_im {i}.png" for i in range(4)]


def test_blank_lines_count_in_keys_and_labels_are_read_as_atoi(folder):
    # Caffe numbers keys by line (a blank line is an unreadable entry) and reads labels with
    # atoi: "11.0" is 11, "12\r" (a Windows line end) is 12
    (folder / "list.txt").write_bytes(b"im 0.png 10\n\nim 1.png 11.0\nim 2.png 12\r\n")
    db = _convert(folder)
    env = lmdb.open(db, readonly=True, lock=False)
    with env.begin() as txn:
        keys = [k.decode() for k, _ in txn.cursor()]
    env.close()
    assert keys == ["00000000_im 0.png", "00000002_im 1.png", "00000003_im 2.png"]
    np.testing.assert_array_equal(_read(db, batch=3)["label"], [10, 11, 12])


def test_encoded_png_round_trip_and_encode_type(folder):
    db = _convert(folder, "--encoded")
    env = lmdb.open(db, readonly=True, lock=False)
    with env.begin() as txn:
        datum = caffe_pb2.Datum.FromString(next(iter(txn.cursor()))[1])
    env.close()
    assert datum.encoded and datum.data == (folder / "img" / "im 0.png").read_bytes()
    np.testing.assert_array_equal(_read(db)["data"], RGB[..., ::-1].transpose(0, 3, 1, 2))
    jpg = _convert(folder, "-encode_type=jpg", db="jpg")
    assert _read(jpg)["data"].shape == (4, 3, 5, 6)


def test_gray_resize_shuffle_and_check_size(folder):
    out = _read(_convert(folder, "--gray", "-resize_height=3", "--resize_width", "4",
                         "--shuffle", "--check_size"))
    assert out["data"].shape == (4, 1, 3, 4)
    assert sorted(out["label"].tolist()) == [10, 11, 12, 13]
    colour = _read(_convert(folder, "--gray=false", "-resize_height=3", "-resize_width=4",
                            db="c"))
    expected = np.stack([bilinear(im[..., ::-1], 3, 4).transpose(2, 0, 1) for im in RGB])
    assert np.abs(colour["data"] - expected).max() <= 1


def test_unreadable_images_are_skipped_with_their_line(folder):
    (folder / "list.txt").write_text("im 0.png 1\nmissing.png 2\nim 1.png 3\n")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("caffe").addHandler(handler)
    try:
        db = _convert(folder)
    finally:
        logging.getLogger("caffe").removeHandler(handler)
    err = " ".join(r.getMessage() for r in records)
    assert "line 2" in err and "missing.png" in err
    np.testing.assert_array_equal(_read(db, batch=2)["label"], [1, 3])


def test_existing_database_and_bad_list_fail_cleanly(folder, capsys):
    _convert(folder)
    assert main(["convert_imageset", str(folder / "img") + "/", str(folder / "list.txt"),
                 str(folder / "db")]) == 1
    assert "already exists" in capsys.readouterr().err
    (folder / "list.txt").write_text("im 0.png one\n")
    assert main(["convert_imageset", str(folder) + "/", str(folder / "list.txt"),
                 str(folder / "x")]) == 1
    assert "line 1: the label 'one' is not an integer" in capsys.readouterr().err


def test_compute_image_mean(folder, capsys, monkeypatch):
    monkeypatch.setenv("GLOG_minloglevel", "0")
    db = _convert(folder)
    assert main(["compute_image_mean", db, str(folder / "mean.binaryproto")]) == 0
    blob = caffe_pb2.BlobProto.FromString((folder / "mean.binaryproto").read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 5, 6)
    mean = RGB[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32).mean(0)
    np.testing.assert_allclose(caffe.io.blobproto_to_array(blob)[0], mean, rtol=1e-6)
    value = np.cumsum(mean[2], dtype=np.float32)[-1] / np.float32(mean[2].size)
    assert f"mean_value channel [2]:{value:g}\n" in capsys.readouterr().err  # as Caffe logs it
    out = _read(db, transform=f'mean_file: "{folder / "mean.binaryproto"}"')
    np.testing.assert_allclose(out["data"].mean(0), 0, atol=1e-4)


def _idx(tmp_path, n=3, rows=4, cols=5, gz=True):
    pixels = np.random.default_rng(1).integers(0, 256, (n, rows, cols)).astype(np.uint8)
    labels = np.arange(n, dtype=np.uint8) + 3
    images = np.array([2051, n, rows, cols], ">u4").tobytes() + pixels.tobytes()
    label_bytes = np.array([2049, n], ">u4").tobytes() + labels.tobytes()
    wrap = gzip.compress if gz else (lambda b: b)
    (tmp_path / "images.gz").write_bytes(wrap(images))
    (tmp_path / "labels.gz").write_bytes(wrap(label_bytes))
    return pixels, labels


@pytest.mark.parametrize("gz", [True, False])
def test_convert_mnist_data(tmp_path, gz):
    pixels, labels = _idx(tmp_path, gz=gz)
    assert main(["convert_mnist_data", str(tmp_path / "images.gz"), str(tmp_path / "labels.gz"),
                 str(tmp_path / "mnist"), "--backend=lmdb"]) == 0
    out = _read(str(tmp_path / "mnist"), batch=3)
    np.testing.assert_array_equal(out["data"][:, 0], pixels)
    np.testing.assert_array_equal(out["label"], labels)


def test_convert_mnist_data_rejects_other_files(tmp_path, capsys):
    _idx(tmp_path)
    assert main(["convert_mnist_data", str(tmp_path / "labels.gz"), str(tmp_path / "labels.gz"),
                 str(tmp_path / "m")]) == 1
    assert "is not an MNIST image file" in capsys.readouterr().err


def test_convert_cifar_data_writes_caffes_two_databases(tmp_path, monkeypatch, capsys):
    """Each batch file is label byte + red, green, blue planes; the Datums keep that plane
    order and the keys count on across the five training files (%05d)."""
    import caffe.tools.convert_cifar_data as cifar

    monkeypatch.setattr(cifar, "RECORDS", 2)  # real batches hold 10000 records
    rng = np.random.default_rng(4)
    batches = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        images = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, 2, dtype=np.uint8)
        batches[name] = images, labels
        (tmp_path / name).write_bytes(b"".join(bytes([lab]) + im.tobytes()
                                               for im, lab in zip(images, labels)))
    assert main(["convert_cifar_data", str(tmp_path), str(tmp_path), "lmdb"]) == 0
    train = _read(str(tmp_path / "cifar10_train_lmdb"), batch=10)
    want = [batches[f"data_batch_{i}.bin"] for i in range(1, 6)]
    np.testing.assert_array_equal(train["data"], np.concatenate([im for im, _ in want]))
    np.testing.assert_array_equal(train["label"], np.concatenate([lab for _, lab in want]))
    test = _read(str(tmp_path / "cifar10_test_lmdb"), batch=2)
    np.testing.assert_array_equal(test["data"], batches["test_batch.bin"][0])
    with lmdb.open(str(tmp_path / "cifar10_train_lmdb"), readonly=True, lock=False) as env:
        with env.begin() as txn:
            assert [k.decode() for k, _ in txn.cursor()] == [f"{i:05d}" for i in range(10)]
    (tmp_path / "test_batch.bin").write_bytes(b"\0" * 100)
    assert main(["convert_cifar_data", str(tmp_path), str(tmp_path / "x"), "lmdb"]) == 1
    assert "test_batch.bin' holds 100 bytes" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # checked before anything was written


FEATURE_NET = """
layer { name: "d" type: "HDF5Data" top: "x" hdf5_data_param { source: "%s" batch_size: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "fc"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "r" type: "Reshape" bottom: "fc" top: "fc4" reshape_param { shape { dim: 0
  dim: 3 dim: 1 dim: 1 } } }
"""


def test_extract_features_writes_one_datum_per_item_with_caffes_keys(tmp_path):
    import h5py

    x = np.random.default_rng(4).standard_normal((4, 5)).astype(np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = x
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'x.h5'}\n")
    (tmp_path / "net.prototxt").write_text(FEATURE_NET % (tmp_path / "list.txt"))
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    net.save(str(tmp_path / "w.caffemodel"))
    w, b = (p.data for p in net.params["ip"])
    expected = x @ w.T + b
    assert main(["extract_features", str(tmp_path / "w.caffemodel"),
                 str(tmp_path / "net.prototxt"), "fc,fc4",
                 f"{tmp_path / 'fc_db'},{tmp_path / 'fc4_db'}", "3", "lmdb"]) == 0
    for db, shape in (("fc_db", (3, 1, 1)), ("fc4_db", (3, 1, 1))):
        with lmdb.open(str(tmp_path / db), readonly=True, lock=False) as env:
            with env.begin() as txn:
                records = list(txn.cursor())
        assert [k for k, _ in records] == [b"%010d" % i for i in range(6)]
        for i, (_, value) in enumerate(records):
            datum = caffe_pb2.Datum.FromString(value)
            assert (datum.channels, datum.height, datum.width) == shape
            np.testing.assert_allclose(datum.float_data, expected[i % 4], rtol=1e-5, atol=1e-6)


def test_extract_features_refuses_unknown_blobs_and_mismatched_lists(tmp_path, capsys):
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "x" type: "DummyData" top: "x" dummy_data_param { shape { dim: 1 } } }')
    caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST).save(str(tmp_path / "w.caffemodel"))
    args = [str(tmp_path / "w.caffemodel"), str(tmp_path / "net.prototxt")]
    assert main(["extract_features", *args, "fc7", str(tmp_path / "db"), "1", "lmdb"]) != 0
    assert "Unknown feature blob name fc7" in capsys.readouterr().err
    assert main(["extract_features", *args, "x,x", str(tmp_path / "db"), "1", "lmdb"]) != 0
    assert "give one database per blob" in capsys.readouterr().err
    assert not (tmp_path / "db").exists()
