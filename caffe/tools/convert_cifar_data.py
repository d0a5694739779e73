"""``caffe convert_cifar_data INPUT_FOLDER OUTPUT_FOLDER DB_TYPE``: the binary CIFAR-10 batches
to two databases, as Caffe's examples/cifar10 tool.

``INPUT_FOLDER`` holds ``data_batch_1.bin`` ... ``data_batch_5.bin`` and ``test_batch.bin``
(10000 records each: one label byte, then 3072 pixel bytes, the 32x32 red plane, green plane
and blue plane). ``OUTPUT_FOLDER/cifar10_train_DB_TYPE`` gets the 50000 training records and
``OUTPUT_FOLDER/cifar10_test_DB_TYPE`` the 10000 test ones, each a 3 x 32 x 32 uint8 Datum with
the planes in the file's order (Caffe does not reorder them), keyed by the record's running
index as ``%05d``.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from caffe._common import LOG
from caffe.data.cli_support import Progress
from caffe.data.datum import chw_to_datum
from caffe.data.db import BACKENDS, open_writer
from caffe.errors import FileFormatError

COMMAND = "convert_cifar_data"
HELP = "convert the binary CIFAR-10 batches to train and test LMDB/LevelDB databases"

SIZE, RECORDS = 32, 10000
RECORD_BYTES = 1 + 3 * SIZE * SIZE
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input_folder", help="the folder of the *.bin batch files")
    parser.add_argument("output_folder", help="where cifar10_train_<db> and cifar10_test_<db> "
                        "are created")
    parser.add_argument("db_type", choices=BACKENDS, help="lmdb or leveldb")


def _check_size(path: str, size: int) -> None:
    if size != RECORDS * RECORD_BYTES:
        raise FileFormatError(
            f"'{path}' holds {size} bytes; a CIFAR-10 binary batch holds {RECORDS} records of "
            f"{RECORD_BYTES} bytes ({RECORDS * RECORD_BYTES}); is it the binary version "
            "(cifar-10-binary.tar.gz), gunzipped?")


def read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(10000, 3, 32, 32)`` uint8 and labels ``(10000,)`` of one batch file."""
    try:
        with open(path, "rb") as f:
            data = f.read(RECORDS * RECORD_BYTES + 1)
    except OSError as e:
        raise FileFormatError(f"cannot read the CIFAR-10 batch '{path}': {e.strerror}") from None
    _check_size(path, len(data))
    records = np.frombuffer(data, dtype=np.uint8).reshape(RECORDS, RECORD_BYTES)
    labels = records[:, 0]
    if labels.max() > 9:
        row = int(np.argmax(labels > 9))
        raise FileFormatError(f"'{path}': record {row} has label {labels[row]}; CIFAR-10 "
                              "labels are 0-9")
    return records[:, 1:].reshape(RECORDS, 3, SIZE, SIZE), labels


def _write(path: str, backend: str, files: list[str], progress: Progress) -> None:
    with open_writer(path, backend) as db:
        index = 0
        for name in files:
            LOG.info("Reading %s", name)
            images, labels = read_batch(name)
            for image, label in zip(images, labels):
                db.put("%05d" % index, chw_to_datum(image, int(label)).SerializeToString())
                index += 1
                progress.update()
            db.commit()


def run(args: argparse.Namespace) -> int:
    inputs = [os.path.join(args.input_folder, f) for f in TRAIN_FILES + ["test_batch.bin"]]
    missing = [f for f in inputs if not os.path.isfile(f)]
    if missing:
        raise FileFormatError(f"convert_cifar_data: missing {missing}; the input folder must "
                              "hold data_batch_1.bin ... data_batch_5.bin and test_batch.bin")
    for path in inputs:  # before anything is written
        _check_size(path, os.path.getsize(path))
    progress = Progress(6 * RECORDS, "images")
    LOG.info("Writing Training data")
    _write(os.path.join(args.output_folder, f"cifar10_train_{args.db_type}"), args.db_type,
           inputs[:5], progress)
    LOG.info("Writing Testing data")
    _write(os.path.join(args.output_folder, f"cifar10_test_{args.db_type}"), args.db_type,
           inputs[5:], progress)
    progress.close()
    print(f"convert_cifar_data: wrote 50000 training and 10000 test records to "
          f"{args.output_folder}")
    return 0


def main() -> int:
    from caffe.tools.cli import tool_main

    return tool_main(COMMAND)
