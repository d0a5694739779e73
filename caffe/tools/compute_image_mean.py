"""``caffe compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]``: the mean image of a database of
Datums, written as a binaryproto BlobProto (1 x C x H x W), as Caffe's tool. The per-channel
means are printed. Encoded Datums are decoded with their own channels."""

from __future__ import annotations

import argparse

import numpy as np

from caffe._common import LOG, init_log
from caffe.data.cli_support import Progress
from caffe.data.datum import datum_to_chw, parse_datum
from caffe.data.db import BACKENDS, open_reader
from caffe.errors import FileFormatError
from caffe.proto import caffe_pb2, files

COMMAND = "compute_image_mean"
HELP = "compute the mean image of a Datum database (LMDB/LevelDB) as a binaryproto"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input_db", help="the database of Datums")
    parser.add_argument("output_file", nargs="?", default=None,
                        help="binaryproto file to write the mean to")
    parser.add_argument("--backend", default="lmdb", choices=BACKENDS,
                        help="database type (default lmdb)")


def image_mean(path: str, backend: str = "lmdb") -> np.ndarray:
    """The mean ``CxHxW`` image (float32, summed in float32 record by record, as Caffe)."""
    with open_reader(path, backend) as db:
        total = len(db)
        progress = Progress(total, "files", every=10000)
        acc = None
        count = 0
        for index, (key, value) in enumerate(db.records()):
            where = f"record {index} (key '{key.decode('utf-8', 'replace')}') of '{path}'"
            arr = datum_to_chw(parse_datum(value, where), where)
            if acc is None:
                acc = np.zeros(arr.shape, dtype=np.float32)
            elif arr.shape != acc.shape:
                raise FileFormatError(
                    f"{where}: image of shape {arr.shape}, but the first one is {acc.shape}; "
                    "all images must have the same size to average them")
            acc += arr
            count += 1
            progress.update()
        progress.close()
    if acc is None:
        raise FileFormatError(f"database '{path}' is empty")
    return acc / np.float32(count)


def run(args: argparse.Namespace) -> int:
    init_log()
    mean = image_mean(args.input_db, args.backend)
    if args.output_file:
        blob = caffe_pb2.BlobProto(num=1, channels=mean.shape[0], height=mean.shape[1],
                                   width=mean.shape[2])
        blob.data.extend(mean.ravel().tolist())
        LOG.info("Write to %s", args.output_file)
        files.write_binary(args.output_file, blob)
    # as Caffe logs them: each channel's values summed in float32 in order, over the count
    LOG.info("Number of channels: %d", mean.shape[0])
    planes = mean.reshape(mean.shape[0], -1)
    for c, plane in enumerate(planes):
        value = np.cumsum(plane, dtype=np.float32)[-1] / np.float32(plane.size)
        LOG.info("mean_value channel [%d]:%g", c, value)
    return 0


def main() -> int:
    from caffe.tools.cli import tool_main

    return tool_main(COMMAND)
