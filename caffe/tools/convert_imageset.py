"""``caffe convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME``: store the images of a list
file (``path label`` per line) as Datums in a new LMDB or LevelDB, with Caffe's keys
(``%08d_<path>``, the line's index and its path) and Caffe's pixel layout (BGR, CxHxW).

Image paths are ``ROOTFOLDER + path``. Unreadable images are reported and skipped, as in
Caffe."""

from __future__ import annotations

import argparse

import torch

from caffe._common import LOG, STATE
from caffe.data.cli_support import Progress, add_bool_flag
from caffe.data.datum import image_file_to_datum
from caffe.data.db import BACKENDS, open_writer
from caffe.data.image import extension, image_format
from caffe.data.sources import read_labeled_list
from caffe.errors import FileFormatError

COMMAND = "convert_imageset"
HELP = "convert a set of images (a list file of 'path label' lines) to an LMDB/LevelDB"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root_folder", help="prefix of the image paths (end it with '/')")
    parser.add_argument("listfile", help="text file of 'path label' lines")
    parser.add_argument("db_name", help="database to create (must not exist)")
    add_bool_flag(parser, "gray", "read the images as grey (1 channel)")
    add_bool_flag(parser, "shuffle", "shuffle the order of the images (seeded by --seed)")
    parser.add_argument("--backend", default="lmdb", choices=BACKENDS,
                        help="database type (default lmdb)")
    parser.add_argument("--resize_width", type=int, default=0, help="width to resize to")
    parser.add_argument("--resize_height", type=int, default=0, help="height to resize to")
    add_bool_flag(parser, "check_size", "check that all the Datums have the same size")
    add_bool_flag(parser, "encoded", "store the images encoded (JPEG/PNG) in the Datums")
    parser.add_argument("--encode_type", default="",
                        help="encoding of the stored images ('png', 'jpg', ...); implies "
                        "--encoded; default: each file's own extension")
    parser.add_argument("--seed", type=int, default=None, help="random seed for --shuffle")


def run(args: argparse.Namespace) -> int:
    is_color = not args.gray
    entries = read_labeled_list(args.listfile, "image list file", keep_blank=True)
    if args.shuffle:
        gen = torch.Generator().manual_seed(args.seed) if args.seed is not None \
            else STATE.generator
        entries = [entries[i] for i in torch.randperm(len(entries), generator=gen).tolist()]
    LOG.info("A total of %d images.", len(entries))
    encoded = args.encoded or bool(args.encode_type)
    if args.encode_type:
        image_format(args.encode_type)
        if not args.encoded:
            LOG.info("encode_type specified, assuming encoded=true.")
    height, width = max(0, args.resize_height), max(0, args.resize_width)
    size = None
    count = skipped = 0
    progress = Progress(len(entries), "images")
    with open_writer(args.db_name, args.backend) as db:
        for line_id, entry in enumerate(entries):
            enc = args.encode_type
            if encoded and not enc:
                enc = extension(entry.path)
                if not enc:
                    LOG.warning("Failed to guess the encoding of '%s'", entry.path)
                    enc = "png"
            where = f"line {entry.line} of '{args.listfile}'"
            try:
                datum = image_file_to_datum(args.root_folder + entry.path, entry.label, height,
                                            width, is_color, enc if encoded else "", where)
            except FileFormatError as e:
                LOG.error("%s; skipped", e)
                skipped += 1
                progress.update()
                continue
            if args.check_size:
                n = len(datum.data)
                if size is None:
                    size = n
                elif n != size:
                    raise FileFormatError(
                        f"image '{entry.path}' ({where}) gives {n} bytes of data, but the "
                        f"first image gave {size} (--check_size); resize the images with "
                        "--resize_height/--resize_width")
            db.put("%08d_%s" % (line_id, entry.path), datum.SerializeToString())
            count += 1
            if count % 1000 == 0:
                db.commit()
            progress.update()
    progress.close()
    print(f"convert_imageset: wrote {count} images to {args.backend} '{args.db_name}'"
          + (f"; skipped {skipped} unreadable images" if skipped else ""))
    return 0


def main() -> int:
    from caffe.tools.cli import tool_main

    return tool_main(COMMAND)
