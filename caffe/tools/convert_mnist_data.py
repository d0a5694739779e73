"""``caffe convert_mnist_data [FLAGS] IMAGE_FILE LABEL_FILE DB_NAME``: MNIST's IDX files
(``*-images-idx3-ubyte`` and ``*-labels-idx1-ubyte``, plain or gzipped) to a database of
1 x rows x cols uint8 Datums keyed ``%08d``, as Caffe's examples/mnist tool."""

from __future__ import annotations

import argparse
import gzip

import numpy as np

from caffe._common import LOG
from caffe.data.cli_support import Progress
from caffe.data.datum import chw_to_datum
from caffe.data.db import BACKENDS, open_writer
from caffe.errors import FileFormatError

COMMAND = "convert_mnist_data"
HELP = "convert MNIST IDX image and label files to an LMDB/LevelDB of Datums"

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image_file", help="IDX3 image file (optionally .gz)")
    parser.add_argument("label_file", help="IDX1 label file (optionally .gz)")
    parser.add_argument("db_name", help="database to create (must not exist)")
    parser.add_argument("--backend", default="lmdb", choices=BACKENDS,
                        help="database type (default lmdb)")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FileFormatError(f"cannot read '{path}': {e.strerror}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise FileFormatError(f"'{path}' is a corrupt gzip file: {e}") from None
    return data


def read_idx(image_file: str, label_file: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, rows, cols)`` uint8 and labels ``(N,)`` uint8 from MNIST IDX files."""
    images, labels = _read(image_file), _read(label_file)
    header = np.frombuffer(images[:16], dtype=">u4") if len(images) >= 16 else None
    if header is None or header[0] != IMAGE_MAGIC:
        raise FileFormatError(f"'{image_file}' is not an MNIST image file (IDX3, magic "
                              f"{IMAGE_MAGIC})")
    lheader = np.frombuffer(labels[:8], dtype=">u4") if len(labels) >= 8 else None
    if lheader is None or lheader[0] != LABEL_MAGIC:
        raise FileFormatError(f"'{label_file}' is not an MNIST label file (IDX1, magic "
                              f"{LABEL_MAGIC})")
    n, rows, cols = (int(v) for v in header[1:])
    if int(lheader[1]) != n:
        raise FileFormatError(f"'{image_file}' holds {n} images but '{label_file}' holds "
                              f"{int(lheader[1])} labels")
    if len(images) != 16 + n * rows * cols or len(labels) != 8 + n:
        raise FileFormatError(f"'{image_file}' or '{label_file}' is truncated (expected {n} "
                              f"items of {rows}x{cols})")
    pixels = np.frombuffer(images, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    return pixels, np.frombuffer(labels, dtype=np.uint8, offset=8)


def run(args: argparse.Namespace) -> int:
    pixels, labels = read_idx(args.image_file, args.label_file)
    LOG.info("A total of %d items.", len(pixels))
    LOG.info("Rows: %d Cols: %d", pixels.shape[1], pixels.shape[2])
    progress = Progress(len(pixels), "files")
    with open_writer(args.db_name, args.backend) as db:
        for i, (img, label) in enumerate(zip(pixels, labels)):
            db.put("%08d" % i, chw_to_datum(img[None], int(label)).SerializeToString())
            if (i + 1) % 1000 == 0:
                db.commit()
            progress.update()
    progress.close()
    print(f"convert_mnist_data: wrote {len(pixels)} items to {args.backend} '{args.db_name}'")
    return 0


def main() -> int:
    from caffe.tools.cli import tool_main

    return tool_main(COMMAND)
