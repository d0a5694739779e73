"""Fuzzing the data sources behind the prefetching layers: ImageData list files (paths to good,
truncated, non-image, EPS and missing files, directories; odd labels, blank lines, CR/LF,
bytes that are not UTF-8) and LMDB databases of random Datum records, each read by a net with
random transformation settings for two batches. Every net must run or raise a CaffeError
(one raised in the prefetch thread included)."""

from __future__ import annotations

import gc
import io
import itertools
import os
import shutil

import numpy as np
from fuzzkit import check_outcome, fuzz_settings, scratch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from test_fuzz_binary import IMAGES, datums

import caffe
from caffe.data.db import open_writer
from caffe.proto import caffe_pb2


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 9).save(buf, format="PNG")
    return buf.getvalue()


def _image_folder() -> dict[str, str]:
    folder = scratch("images")
    os.makedirs(folder, exist_ok=True)
    files = {
        "good.png": _png((5, 4)), "grey.jpg": IMAGES[1], "alpha.png": IMAGES[2],
        "small.png": _png((1, 1), "L"), "cut.png": _png((5, 4))[:40], "junk.png": b"\x89PNGjunk",
        "empty.jpg": b"", "page.eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
                                      b"newpath 0 0 moveto 8 8 lineto stroke showpage\n",
        "name with space.png": _png((4, 4)),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = os.path.join(folder, name)
        with open(paths[name], "wb") as f:
            f.write(data)
    paths["folder"] = folder
    paths["missing"] = os.path.join(folder, "missing.png")
    return paths


PATHS = _image_folder()
LABELS = st.sampled_from(["0", "2", "-1", "x", "", "99999999999999999999", "1.5", " 3"])
LINE = st.tuples(st.sampled_from(sorted(PATHS.values())), LABELS).map(
    lambda t: f"{t[0]} {t[1]}".encode())
ODD = st.sampled_from([b"", b"   ", b"\xff\xfe bad", b"\t", b"#comment"])
def _concat(parts: tuple[list, list]) -> list:
    return parts[0] + parts[1]


GOOD_LINE = st.tuples(st.sampled_from(["good.png", "grey.jpg", "alpha.png", "small.png",
                                       "name with space.png"]), st.integers(0, 2)).map(
    lambda t: f"{PATHS[t[0]]} {t[1]}".encode())
LINES = st.one_of(st.lists(st.one_of(LINE, LINE, ODD), max_size=5),
                  st.tuples(st.lists(GOOD_LINE, min_size=1, max_size=4),
                            st.lists(st.one_of(LINE, ODD), max_size=1)).map(_concat))
LIST_FILE = LINES.flatmap(
    lambda lines: st.sampled_from([b"\n", b"\r\n"]).map(lambda nl: nl.join(lines) + nl))


@st.composite
def transforms(draw) -> caffe_pb2.TransformationParameter:
    t = caffe_pb2.TransformationParameter(
        mirror=draw(st.booleans()), crop_size=draw(st.integers(0, 5)),
        scale=draw(st.sampled_from([1.0, 0.5, 0.0])))
    if draw(st.integers(0, 3)) == 0:
        t.mean_value.extend(draw(st.lists(st.sampled_from([0.0, 10.0, 128.0]), max_size=4)))
    choice = draw(st.integers(0, 5))
    t.force_color, t.force_gray = choice == 0, choice == 1
    return t


def _two_batches(param: caffe_pb2.NetParameter, phase: int) -> None:
    net = caffe.Net(param, phase)
    try:
        net.forward()
        net.forward()
    finally:
        for layer in net.layers:
            if hasattr(layer, "close"):
                layer.close()


@fuzz_settings(60)
@given(LIST_FILE, transforms(), st.integers(1, 3), st.sampled_from([(0, 0), (3, 4), (1, 1)]),
       st.booleans(), st.booleans(), st.sampled_from([caffe.TRAIN, caffe.TEST]))
def test_image_list(listing, transform, batch, size, color, shuffle, phase):
    path = scratch("list.txt")
    with open(path, "wb") as f:
        f.write(listing)
    param = caffe_pb2.NetParameter(name="images")
    lp = param.layer.add(name="data", type="ImageData", top=["data", "label"])
    lp.transform_param.CopyFrom(transform)
    p = lp.image_data_param
    p.source, p.batch_size, p.is_color, p.shuffle = path, batch, color, shuffle
    p.new_height, p.new_width = size
    check_outcome(lambda: _two_batches(param, phase))


_COUNTER = itertools.count()


GOOD_DATUM = st.integers(0, 2).map(lambda label: caffe.io.array_to_datum(
    np.full((3, 4, 5), 7 * label, np.uint8), label).SerializeToString())
RECORDS = st.one_of(st.lists(datums(), min_size=1, max_size=3),
                    st.tuples(st.lists(GOOD_DATUM, min_size=1, max_size=3),
                              st.lists(datums(), max_size=1)).map(_concat))


@fuzz_settings(60)
@given(RECORDS, transforms(), st.integers(1, 3),
       st.sampled_from([caffe.TRAIN, caffe.TEST]))
def test_lmdb_records(records, transform, batch, phase):
    folder = scratch(f"db{next(_COUNTER)}")
    with open_writer(folder, "lmdb") as w:
        for i, value in enumerate(records):
            w.put(f"{i:04d}", value)
    param = caffe_pb2.NetParameter(name="records")
    lp = param.layer.add(name="data", type="Data", top=["data", "label"])
    lp.transform_param.CopyFrom(transform)
    lp.data_param.source, lp.data_param.batch_size = folder, batch
    lp.data_param.backend = caffe_pb2.DataParameter.LMDB
    try:
        check_outcome(lambda: _two_batches(param, phase))
    finally:
        gc.collect()
        shutil.rmtree(folder, ignore_errors=True)


def test_eps_is_not_decoded():
    """An EPS file in an image list is refused as an image, never handed to Ghostscript."""
    path = scratch("eps_list.txt")
    with open(path, "w") as f:
        f.write(f"{PATHS['page.eps']} 0\n")
    param = caffe_pb2.NetParameter(name="eps")
    lp = param.layer.add(name="data", type="ImageData", top=["data", "label"])
    lp.image_data_param.source, lp.image_data_param.batch_size = path, 1
    err = check_outcome(lambda: _two_batches(param, caffe.TEST))
    assert isinstance(err, caffe.errors.FileFormatError) and "page.eps" in str(err)
