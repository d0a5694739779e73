"""The prefetch machinery: public queue state and wait counts, a producer that sleeps on a full
queue, lower-priority loader threads, errors from decode workers naming the record, clean stops
(close, net deletion, interpreter exit) and, on CUDA, batches staged on the device."""

from __future__ import annotations

import gc
import io
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import caffe
from caffe.data import prefetch
from caffe.data.prefetch import Prefetcher
from caffe.errors import FileFormatError
from caffe.proto import caffe_pb2

from layer_rows.data import write_lmdb


def _wait_until(cond, timeout=5.0):
    deadline = time.time() + timeout
    while not cond() and time.time() < deadline:
        time.sleep(0.005)
    return cond()


def _jpeg_datums(n, size=16, bad=()):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
        data = b"\xff\xd8 not a jpeg" if i in bad else buf.getvalue()
        out.append(caffe_pb2.Datum(data=data, encoded=True, label=i))
    return out


def _data_net(tmp_path, src, batch=2, prefetch_depth=4, phase=caffe.TRAIN):
    (tmp_path / "net.prototxt").write_text(
        f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ source: '
        f'"{src}" backend: LMDB batch_size: {batch} prefetch: {prefetch_depth} }} '
        "transform_param { crop_size: 12 mirror: true } }")
    return caffe.Net(str(tmp_path / "net.prototxt"), phase)


def test_queue_state_and_wait_counts():
    release = threading.Event()
    calls = []

    def produce():
        calls.append(1)
        if len(calls) > 3:
            release.wait(5)
        return len(calls)

    p = Prefetcher(produce, 2, "t")
    try:
        assert _wait_until(lambda: p.queue_full)
        assert p.ready_batches == 2
        assert [p.get(), p.get()] == [1, 2]  # ready: no wait
        assert p.waits == 0 and p.served == 2
        assert _wait_until(lambda: p.ready_batches == 1)  # produced while the queue was full
        assert p.get() == 3
        threading.Timer(0.05, release.set).start()
        assert p.get() == 4  # had to wait for it
        assert p.waits == 1 and p.wait_s > 0.02 and p.served == 4
    finally:
        release.set()
        p.close()
    assert not p.alive


def test_producer_sleeps_on_a_full_queue_and_close_wakes_it():
    calls = []
    p = Prefetcher(lambda: calls.append(1) or len(calls), 3, "t")
    assert _wait_until(lambda: p.queue_full)
    time.sleep(0.2)
    assert len(calls) == 4  # 3 queued and 1 waiting to be put: it does not run ahead
    t0 = time.perf_counter()
    p.close()
    assert not p.alive and time.perf_counter() - t0 < 1.0


def _nice(tid):
    return os.getpriority(os.PRIO_PROCESS, tid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
@pytest.mark.parametrize("setting, delta", [(None, prefetch.DEFAULT_NICE), ("3", 3), ("0", 0)])
def test_loader_threads_run_nicer_than_the_net(monkeypatch, setting, delta):
    if setting is None:
        monkeypatch.delenv("CAFFE_DATA_NICE", raising=False)
    else:
        monkeypatch.setenv("CAFFE_DATA_NICE", setting)
    main = _nice(os.getpid())
    seen = []

    def nice_of_this_thread(*_):
        seen.append(_nice(threading.get_native_id()))
        return np.zeros((1, 2, 2), np.float32), 0.0, "x"

    batcher = prefetch.Batcher(caffe.data.transformer.DataTransformer(
        caffe_pb2.TransformationParameter(), caffe.TEST), 0, workers=2)
    p = Prefetcher(lambda: (seen.append(_nice(threading.get_native_id())),
                            batcher.make([nice_of_this_thread] * 4))[1], 1, "t", batcher.close)
    try:
        p.get()
    finally:
        p.close()
    assert _nice(threading.get_native_id()) == main  # the caller is untouched
    assert len(seen) >= 5 and set(seen) == {min(19, main + delta)}


def test_a_decode_worker_error_names_the_record_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CAFFE_DATA_WORKERS", "2")
    src = str(tmp_path / "jpegs")
    write_lmdb(src, _jpeg_datums(6, bad={3}))
    net = _data_net(tmp_path, src)
    net.forward()
    with pytest.raises(FileFormatError, match=r"Layer 'd' \(Data\): record 3 \(key '00000003'\) "
                                              rf"of LMDB '{src}': cannot decode the image"):
        net.forward()


def test_deleting_the_net_stops_the_loader_and_decode_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("CAFFE_DATA_WORKERS", "2")
    src = str(tmp_path / "jpegs")
    write_lmdb(src, _jpeg_datums(6))
    net = _data_net(tmp_path, src, prefetch_depth=2)
    prefetcher = net.layers[0].prefetcher
    assert _wait_until(lambda: prefetcher.queue_full)
    del net
    gc.collect()
    assert _wait_until(lambda: not any(t.name.startswith(("caffe-prefetch", "caffe-decode"))
                                       for t in threading.enumerate()))


def test_interpreter_exit_with_busy_decode_workers(tmp_path):
    src = str(tmp_path / "jpegs")
    write_lmdb(src, _jpeg_datums(8, size=64))
    code = (
        "import caffe\n"
        f"open('n.prototxt','w').write('layer {{ name: \"d\" type: \"Data\" top: \"data\" "
        f"data_param {{ source: \"{src}\" backend: LMDB batch_size: 4 prefetch: 1 }} }}')\n"
        "net = caffe.Net('n.prototxt', caffe.TRAIN)\nnet.forward()\nprint('ok')\n")
    env = dict(os.environ, CAFFE_DATA_WORKERS="2")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr


def test_the_prefetched_batch_becomes_the_top_without_a_copy(tmp_path, monkeypatch):
    src = str(tmp_path / "jpegs")
    write_lmdb(src, _jpeg_datums(4))
    net = _data_net(tmp_path, src, prefetch_depth=1)
    served = []
    get = Prefetcher.get

    def spy(self):
        served.append(get(self))
        return served[-1]

    monkeypatch.setattr(Prefetcher, "get", spy)
    net.forward()
    if caffe._common.STATE.device.type == "cpu":
        assert net.blobs["data"].tensor is served[0][0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_batches_are_staged_on_the_device_and_match_cpu(tmp_path):
    src = str(tmp_path / "jpegs")
    write_lmdb(src, _jpeg_datums(10))
    batches = {}
    for mode in ("cpu", "gpu"):
        caffe.set_random_seed(7)
        getattr(caffe, f"set_mode_{mode}")()
        try:
            net = _data_net(tmp_path, src, batch=3)
            out = []
            for _ in range(5):
                net.forward()
                blob = net.blobs["data"]
                assert blob.tensor.device.type == ("cuda" if mode == "gpu" else "cpu")
                out.append((blob.data.copy(), net.blobs["label"].data.copy()))
            net.layers[0].close()
            batches[mode] = out
        finally:
            caffe.set_mode_cpu()
    for (a, la), (b, lb) in zip(batches["cpu"], batches["gpu"]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
