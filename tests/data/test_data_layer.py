"""The Data layer: key order, wrap-around, rand_skip ignored as in Caffe master, random crops
that follow the seed, background prefetching that stops cleanly, LevelDB through plyvel, and
the errors for bad databases and records."""

from __future__ import annotations

import gc
import logging
import os
import re
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest

import caffe
from caffe.data.db import BackendUnavailableError, open_reader, open_writer
from caffe.errors import FileFormatError, LayerSetupError
from caffe.proto import caffe_pb2

from layer_rows.data import png_bytes, raw_datum, write_lmdb

IMGS = np.random.default_rng(3).integers(0, 256, (5, 2, 4, 5)).astype(np.uint8)


def _db(tmp_path, datums=None, keys=None, name="db"):
    where = str(tmp_path / name)
    if datums is None:
        datums = [raw_datum(a, i) for i, a in enumerate(IMGS)]
    write_lmdb(where, datums, keys)
    return where


def _net(tmp_path, source, batch=2, transform="", extra="", phase=caffe.TEST,
         tops=("data", "label"), backend="LMDB"):
    tops_txt = " ".join(f'top: "{t}"' for t in tops)
    (tmp_path / "net.prototxt").write_text(
        f'layer {{ name: "d" type: "Data" {tops_txt} data_param {{ source: "{source}" '
        f"backend: {backend} batch_size: {batch} {extra} }} "
        f"transform_param {{ {transform} }} }}")
    return caffe.Net(str(tmp_path / "net.prototxt"), phase)


def test_records_come_in_key_order_and_wrap_around(tmp_path):
    keys = ["b", "d", "a", "e", "c"]  # written out of order; read sorted
    src = _db(tmp_path, keys=keys)
    net = _net(tmp_path, src, batch=3)
    order = np.argsort(keys)
    assert net.blobs["data"].shape == (3, 2, 4, 5) and net.blobs["label"].shape == (3,)
    first = net.forward()
    np.testing.assert_array_equal(first["label"], order[:3])
    np.testing.assert_array_equal(first["data"], IMGS[order[:3]])
    np.testing.assert_array_equal(net.forward()["label"], order[[3, 4, 0]])


def test_label_top_is_optional(tmp_path):
    net = _net(tmp_path, _db(tmp_path), tops=("data",))
    assert list(net.blobs) == ["data"]
    np.testing.assert_array_equal(net.forward()["data"], IMGS[:2])


def test_setup_logs_caffes_lines(tmp_path):
    src = _db(tmp_path)
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("caffe")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        _net(tmp_path, src, batch=2)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    shape = ",".join(str(d) for d in (2, *IMGS.shape[1:]))
    assert f"Opened lmdb {src}" in lines and f"output data size: {shape}" in lines


def test_rand_skip_is_ignored_as_in_caffe_master(tmp_path):
    # DataParameter.rand_skip is deprecated: Caffe master's DataLayer starts at the first record
    src = _db(tmp_path)
    starts = set()
    for seed in range(6):
        caffe.set_random_seed(seed)
        starts.add(int(_net(tmp_path, src, batch=1, extra="rand_skip: 3").forward()["label"][0]))
    assert starts == {0}


def test_train_crops_and_mirrors_follow_the_seed(tmp_path):
    src = _db(tmp_path)

    def batches():
        caffe.set_random_seed(11)
        net = _net(tmp_path, src, batch=5, transform="crop_size: 3 mirror: true",
                   phase=caffe.TRAIN)
        return [net.forward()["data"].copy() for _ in range(3)]

    a, b = batches(), batches()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    chosen = set()
    for batch in a:
        for item, src_img in zip(batch, IMGS):
            options = [src_img[:, i:i + 3, j:j + 3] for i in range(2) for j in range(3)]
            options += [o[:, :, ::-1] for o in options]
            matches = [k for k, o in enumerate(options) if np.array_equal(item, o)]
            assert matches
            chosen.add(matches[0])
    assert len(chosen) > 3  # offsets and mirroring vary


def test_test_phase_crops_the_centre_and_mirror_is_still_random(tmp_path):
    net = _net(tmp_path, _db(tmp_path), batch=5, transform="crop_size: 3 mirror: true")
    seen_mirror = seen_plain = False
    for _ in range(4):
        for item, src in zip(net.forward()["data"], IMGS):
            centre = src[:, 0:3, 1:4]
            seen_plain |= np.array_equal(item, centre)
            seen_mirror |= np.array_equal(item, centre[:, :, ::-1])
            assert np.array_equal(item, centre) or np.array_equal(item, centre[:, :, ::-1])
    assert seen_mirror and seen_plain


def test_encoded_jpeg_and_png_datums(tmp_path):
    yy, xx = np.mgrid[0:8, 0:8]
    rgb = np.stack([yy * 30, xx * 30, 100 + yy * xx], -1).astype(np.uint8)  # smooth, for JPEG
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95)
    datums = [caffe_pb2.Datum(data=buf.getvalue(), encoded=True, label=1),
              caffe_pb2.Datum(data=png_bytes(rgb), encoded=True, label=2)]
    net = _net(tmp_path, _db(tmp_path, datums))
    out = net.forward()
    bgr = rgb[:, :, ::-1].transpose(2, 0, 1)
    np.testing.assert_array_equal(out["data"][1], bgr)
    assert np.abs(out["data"][0] - bgr).mean() < 4  # lossy
    grey = _net(tmp_path, _db(tmp_path, datums, name="db2"), transform="force_gray: true")
    assert grey.forward()["data"].shape == (2, 1, 8, 8)


def test_prefetch_runs_ahead_and_stops_when_the_net_is_deleted(tmp_path):
    net = _net(tmp_path, _db(tmp_path), extra="prefetch: 3")
    layer = net.layers[0]
    prefetcher = layer.prefetcher
    deadline = time.time() + 5
    while not prefetcher.queue_full and time.time() < deadline:
        time.sleep(0.01)
    assert prefetcher.ready_batches == 3
    del net, layer
    gc.collect()
    prefetcher._thread.join(5)
    assert not prefetcher.alive
    # the database handle was released: the directory can be rewritten
    assert not any(t.name == "caffe-prefetch-d" for t in threading.enumerate())


def test_interpreter_exit_with_a_running_prefetch_thread_does_not_hang(tmp_path):
    src = _db(tmp_path)
    code = (
        "import caffe\n"
        f"open('n.prototxt','w').write('layer {{ name: \"d\" type: \"Data\" top: \"data\" "
        f"data_param {{ source: \"{src}\" backend: LMDB batch_size: 2 }} }}')\n"
        "net = caffe.Net('n.prototxt', caffe.TEST)\nnet.forward()\nprint('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("case, pattern", [
    ("missing", r"LMDB database '.*nowhere' does not exist"),
    ("empty", r"database '.*db' is empty"),
    ("corrupt", r"record 1 \(key '00000001'\) of LMDB '.*db': not a valid Datum"),
    ("size", r"record 0 \(key '00000000'\) .*data holds 5 bytes, but channels x height x"),
    ("undecodable", r"record 0 \(key '00000000'\) .*cannot decode the image"),
    ("mean_shape", r"mean file '.*mean.binaryproto' has shape \(2, 3, 3\), but the image .* "
                   r"has shape \(2, 4, 5\); the mean must have the image's full size \(before "
                   r"cropping to 3\)"),
    ("too_small", r"image .* of size 4x5 is smaller than crop_size 6"),
    ("mean_values", r"3 mean_value entries for an image with 2 channels"),
])
def test_bad_databases_and_records_raise(tmp_path, case, pattern):
    transform = ""
    if case == "missing":
        src = str(tmp_path / "nowhere")
    elif case == "empty":
        src = _db(tmp_path, [])
        os.makedirs(src, exist_ok=True)
    elif case == "corrupt":
        src = str(tmp_path / "db")
        import lmdb

        env = lmdb.open(src, map_size=1 << 20)
        with env.begin(write=True) as txn:
            txn.put(b"00000000", raw_datum(IMGS[0], 0).SerializeToString())
            txn.put(b"00000001", b"\xff\xff\xff garbage")
        env.close()
    elif case == "size":
        src = _db(tmp_path, [caffe_pb2.Datum(channels=2, height=4, width=5, data=b"12345")])
    elif case == "undecodable":
        src = _db(tmp_path, [caffe_pb2.Datum(data=b"\x89PNG broken", encoded=True)])
    else:
        src = _db(tmp_path)
        if case == "mean_shape":
            bp = caffe.io.array_to_blobproto(np.zeros((1, 2, 3, 3)))
            (tmp_path / "mean.binaryproto").write_bytes(bp.SerializeToString())
            transform = f'crop_size: 3 mean_file: "{tmp_path / "mean.binaryproto"}"'
        elif case == "too_small":
            transform = "crop_size: 6"
        else:
            transform = "mean_value: 1 mean_value: 2 mean_value: 3"
    error = LayerSetupError if case == "mean_values" else FileFormatError
    with pytest.raises(error, match=pattern) as info:
        net = _net(tmp_path, src, transform=transform)
        net.forward()
        net.forward()
    assert "Layer 'd' (Data)" in str(info.value)


def test_a_failed_prefetch_keeps_raising(tmp_path):
    src = str(tmp_path / "db")
    write_lmdb(src, [raw_datum(IMGS[0], 0), caffe_pb2.Datum(channels=2, height=4, width=5)])
    net = _net(tmp_path, src, batch=1)
    net.forward()
    for _ in range(2):
        with pytest.raises(FileFormatError, match="record 1"):
            net.forward()


def test_conflicting_transform_options(tmp_path):
    src = _db(tmp_path)
    with pytest.raises(LayerSetupError, match="both force_color and force_gray"):
        _net(tmp_path, src, transform="force_color: true force_gray: true")
    bp = caffe.io.array_to_blobproto(np.zeros((1, 2, 4, 5)))
    (tmp_path / "m.binaryproto").write_bytes(bp.SerializeToString())
    with pytest.raises(LayerSetupError, match="both mean_file and mean_value"):
        _net(tmp_path, src, transform=f'mean_file: "{tmp_path / "m.binaryproto"}" mean_value: 1')
    with pytest.raises(FileFormatError, match="BlobProto file '.*none.binaryproto' does not "):
        _net(tmp_path, src, transform=f'mean_file: "{tmp_path / "none.binaryproto"}"')


# ---------------------------------------------------------------------------- LevelDB
class _FakeLevelDB:
    """A dict-backed stand-in for plyvel.DB (plyvel is an optional extra)."""

    stores: dict[str, dict[bytes, bytes]] = {}

    def __init__(self, path, create_if_missing=False, error_if_exists=False, **_):
        if path not in self.stores:
            if not create_if_missing:
                raise OSError(f"{path}: does not exist")
            os.makedirs(path)
            open(os.path.join(path, "CURRENT"), "w").close()
            self.stores[path] = {}
        elif error_if_exists:
            raise OSError(f"{path}: exists")
        self.data = self.stores[path]

    def iterator(self):
        items = iter(sorted(self.data.items()))

        class _It:
            def __iter__(self):
                return items

            def close(self):
                pass

        return _It()

    def write_batch(self):
        db = self

        class _Batch:
            def __enter__(self):
                return self

            def put(self, k, v):
                db.data[k] = v

            def __exit__(self, *exc):
                return False

        return _Batch()

    def close(self):
        pass


def test_leveldb_backend_through_plyvel(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "plyvel", types.SimpleNamespace(DB=_FakeLevelDB))
    src = str(tmp_path / "ldb")
    with open_writer(src, "leveldb") as w:
        for i, a in enumerate(IMGS):
            w.put("%08d" % i, raw_datum(a, i).SerializeToString())
    net = _net(tmp_path, src, batch=3, backend="LEVELDB")
    np.testing.assert_array_equal(net.forward()["label"], [0, 1, 2])


def test_missing_plyvel_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "plyvel", None)
    ldb = tmp_path / "ldb"
    ldb.mkdir()
    (ldb / "CURRENT").write_text("MANIFEST-000001\n")  # what a LevelDB folder holds
    expected = (rf"cannot open LevelDB database '{re.escape(str(ldb))}': .*'plyvel' package, "
                r"which is not installed: pip install neocaffe\[leveldb\]")
    with pytest.raises(BackendUnavailableError, match=expected):
        open_reader(str(ldb), "leveldb")
    with pytest.raises(BackendUnavailableError, match="Layer 'd' \\(Data\\): " + expected):
        _net(tmp_path, str(ldb), backend="LEVELDB")
    with pytest.raises(BackendUnavailableError, match=r"LevelDB database '.*new_ldb'.*"
                                                      r"neocaffe\[leveldb\]"):
        open_writer(str(tmp_path / "new_ldb"), "leveldb")


def test_default_backend_detects_an_lmdb(tmp_path):
    net = _net(tmp_path, _db(tmp_path), backend="LEVELDB")
    np.testing.assert_array_equal(net.forward()["label"], [0, 1])


def test_two_nets_read_the_same_lmdb(tmp_path):
    src = _db(tmp_path)
    a = _net(tmp_path, src, phase=caffe.TRAIN)
    b = _net(tmp_path, src)
    np.testing.assert_array_equal(a.forward()["label"], b.forward()["label"])


def test_an_lmdb_the_user_still_holds_open_is_pointed_out(tmp_path):
    """py-lmdb 3 opens an environment once per process: a notebook that wrote the database
    and kept its handle must close it (Caffe's C++ reader would not mind). Older py-lmdb
    versions allow the second handle, and the net simply reads."""
    import lmdb

    src = _db(tmp_path)
    env = lmdb.open(src, readonly=True, lock=False)
    try:
        try:
            lmdb.open(src, readonly=True, lock=False).close()
            once_per_process = False
        except lmdb.Error:
            once_per_process = True
        if once_per_process:
            with pytest.raises(FileFormatError, match=r"your own lmdb\.open\(\.\.\.\) "
                                                      r"handle.*close\(\) before building"):
                _net(tmp_path, src)
        else:
            np.testing.assert_array_equal(_net(tmp_path, src).forward()["label"], [0, 1])
    finally:
        env.close()
    np.testing.assert_array_equal(_net(tmp_path, src).forward()["label"], [0, 1])


def test_writer_refuses_an_existing_database(tmp_path):
    src = _db(tmp_path)
    with pytest.raises(FileFormatError, match="already exists"):
        open_writer(src, "lmdb")


def test_lmdb_writer_grows_its_map(tmp_path):
    big = os.urandom(1 << 20)
    with open_writer(str(tmp_path / "big"), "lmdb") as w:
        for i in range(100):
            w.put("%03d" % i, big)
    with open_reader(str(tmp_path / "big")) as r:
        assert len(r) == 100
