"""Data layer throughput: images/s for JPEG 256x256 Datums with crop 227, mirror and a mean
file (TRAIN phase, batch 64), with 1 and 2 decode workers.

    python benchmarks/data_loader.py [--images 512] [--batches 20] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

import numpy as np
from PIL import Image

import caffe
from caffe.data.db import open_writer
from caffe.proto import caffe_pb2


def make_db(folder: str, n: int) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    db = os.path.join(folder, "jpeg_lmdb")
    with open_writer(db, "lmdb") as w:
        for i in range(n):
            base = np.stack([yy, xx, (yy + xx) // 2], -1) + rng.integers(0, 40, (256, 256, 3))
            buf = io.BytesIO()
            Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
            w.put("%08d" % i, caffe_pb2.Datum(data=buf.getvalue(), encoded=True,
                                              label=i % 10).SerializeToString())
    mean = caffe.io.array_to_blobproto(np.full((1, 3, 256, 256), 120.0, np.float32))
    mean_file = os.path.join(folder, "mean.binaryproto")
    with open(mean_file, "wb") as f:
        f.write(mean.SerializeToString())
    return db, mean_file


def measure(db: str, mean_file: str, workers: int, batches: int, batch: int) -> float:
    os.environ["CAFFE_DATA_WORKERS"] = str(workers)
    param = caffe_pb2.NetParameter()
    layer = param.layer.add(name="data", type="Data", top=["data", "label"])
    layer.data_param.source, layer.data_param.batch_size = db, batch
    layer.data_param.backend = caffe_pb2.DataParameter.LMDB
    layer.transform_param.crop_size, layer.transform_param.mirror = 227, True
    layer.transform_param.mean_file = mean_file
    net = caffe.Net(param, caffe.TRAIN)
    net.forward()  # warm up (the first batches are already prefetched; drain them)
    for _ in range(layer.data_param.prefetch):
        net.forward()
    start = time.perf_counter()
    for _ in range(batches):
        net.forward()
    elapsed = time.perf_counter() - start
    net.layers[0].close()
    return batches * batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        db, mean_file = make_db(folder, args.images)
        for w in args.workers:
            rate = measure(db, mean_file, w, args.batches, args.batch)
            print(f"decode workers {w}: {rate:,.0f} images/s")


if __name__ == "__main__":
    main()
