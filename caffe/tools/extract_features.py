"""``extract_features``: store blobs of a trained net, image by image, in LMDB/LevelDB (Caffe's
``extract_features`` tool, with its arguments and output).

``extract_features WEIGHTS NET_PROTOTXT BLOB1[,BLOB2...] DB1[,DB2...] NUM_MINI_BATCHES DB_TYPE
[CPU|GPU] [DEVICE_ID]`` builds the net in the TEST phase (its data layer supplies the images),
runs NUM_MINI_BATCHES forward passes and writes, for every item of every batch, one Datum per
blob into that blob's new database: ``float_data`` holds the item's values, ``channels``,
``height`` and ``width`` the blob's legacy dimensions, and the key is the item's running index
as ten digits (``0000000000``, ``0000000001``, ...). Records are committed every 1000 items.
"""

from __future__ import annotations

import argparse

from caffe._common import LOG, init_log, set_device, set_mode_cpu, set_mode_gpu
from caffe.data.db import BACKENDS, open_writer
from caffe.errors import CaffeError
from caffe.layer import TEST
from caffe.net import Net
from caffe.proto import caffe_pb2

COMMAND = "extract_features"
HELP = "write blobs of a trained net (one Datum per image) to LMDB/LevelDB databases"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pretrained_net_param", help="trained weights (caffemodel/HDF5)")
    parser.add_argument("feature_extraction_proto_file",
                        help="the net (prototxt) with a data layer for the images")
    parser.add_argument("blob_names", help="blobs to extract, comma-separated (e.g. fc7)")
    parser.add_argument("dataset_names", help="databases to create, one per blob, "
                        "comma-separated")
    parser.add_argument("num_mini_batches", type=int, help="forward passes to run")
    parser.add_argument("db_type", choices=BACKENDS, help="lmdb or leveldb")
    parser.add_argument("mode", nargs="?", default="CPU", choices=("CPU", "GPU"),
                        help="CPU (default) or GPU")
    parser.add_argument("device_id", nargs="?", type=int, default=0, help="GPU id (default 0)")


def _datum(values, shape: tuple[int, int, int]) -> caffe_pb2.Datum:
    channels, height, width = shape
    datum = caffe_pb2.Datum(channels=channels, height=height, width=width)
    datum.float_data.extend(values.ravel().tolist())
    return datum


def run(args: argparse.Namespace) -> int:
    init_log()
    blob_names = args.blob_names.split(",")
    dataset_names = args.dataset_names.split(",")
    if len(blob_names) != len(dataset_names):
        raise CaffeError(f"extract_features: {len(blob_names)} blob names {blob_names} but "
                         f"{len(dataset_names)} dataset names {dataset_names}; give one "
                         "database per blob")
    if args.num_mini_batches < 0:
        raise CaffeError(f"extract_features: num_mini_batches must be >= 0, got "
                         f"{args.num_mini_batches}")
    if args.mode == "GPU":
        LOG.info("Using GPU %d", args.device_id)
        set_device(args.device_id)
        set_mode_gpu()
    else:
        LOG.info("Using CPU")
        set_mode_cpu()
    net = Net(args.feature_extraction_proto_file, TEST, weights=args.pretrained_net_param)
    for name in blob_names:
        if name not in net.blobs:
            raise CaffeError(f"Unknown feature blob name {name} in the network "
                             f"{args.feature_extraction_proto_file}; its blobs are "
                             f"{list(net.blobs)}")
    writers = [open_writer(name, args.db_type) for name in dataset_names]
    counts = [0] * len(blob_names)
    try:
        LOG.info("Extracting Features")
        for _ in range(args.num_mini_batches):
            net.forward()
            for i, name in enumerate(blob_names):
                blob = net.blobs[name]
                shape = (blob.channels, blob.height, blob.width)
                values = blob.data.reshape(blob.shape[0] if blob.shape else 1, -1)
                for item in values:
                    writers[i].put(f"{counts[i]:010d}", _datum(item, shape).SerializeToString())
                    counts[i] += 1
                    if counts[i] % 1000 == 0:
                        writers[i].commit()
                        LOG.info("Extracted features of %d query images for feature blob %s",
                                 counts[i], name)
    finally:
        for w in writers:
            w.close()
    for name, count in zip(blob_names, counts):
        LOG.info("Extracted features of %d query images for feature blob %s", count, name)
    LOG.info("Successfully extracted the features!")
    return 0


def main() -> int:
    from caffe.tools.cli import tool_main

    return tool_main(COMMAND)
