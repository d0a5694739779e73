"""Datum records: parsing with errors that name the record, and their pixels as ``CxHxW``
arrays (raw uint8 ``data``, ``float_data``, or an ``encoded`` image decoded to BGR)."""

from __future__ import annotations

import numpy as np
from google.protobuf import message as pb_message

from caffe.data.image import decode_image, encode_image, extension, read_image
from caffe.errors import FileFormatError
from caffe.proto import caffe_pb2


def parse_datum(value: bytes, where: str) -> caffe_pb2.Datum:
    """A Datum from its serialized bytes; FileFormatError naming ``where`` when corrupt."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except (pb_message.DecodeError, ValueError, RuntimeError) as e:
        raise FileFormatError(
            f"{where}: not a valid Datum ({len(value)} bytes; corrupt or not a Caffe "
            f"database: {e})") from None
    return datum


def datum_to_chw(datum: caffe_pb2.Datum, where: str, color: bool | None = None) -> np.ndarray:
    """The Datum's pixels as a ``CxHxW`` array (possibly a read-only or strided view): uint8
    for ``data``, float32 for ``float_data``. An encoded Datum is decoded (``color`` as in
    :func:`caffe.data.image.decode_image`; None keeps the image's own channels)."""
    if datum.encoded:
        return decode_image(datum.data, color, where).transpose(2, 0, 1)
    c, h, w = datum.channels, datum.height, datum.width
    if c <= 0 or h <= 0 or w <= 0:
        raise FileFormatError(
            f"{where}: Datum has invalid dimensions channels={c} height={h} width={w}")
    n = c * h * w
    if len(datum.data):
        if len(datum.data) != n:
            raise FileFormatError(
                f"{where}: Datum data holds {len(datum.data)} bytes, but channels x height x "
                f"width = {c} x {h} x {w} = {n}")
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(c, h, w)
    if len(datum.float_data) != n:
        raise FileFormatError(
            f"{where}: Datum float_data holds {len(datum.float_data)} values, but channels x "
            f"height x width = {c} x {h} x {w} = {n}")
    return np.asarray(datum.float_data, dtype=np.float32).reshape(c, h, w)


def chw_to_datum(arr: np.ndarray, label: int | None = None) -> caffe_pb2.Datum:
    """A raw Datum from a ``CxHxW`` array: uint8 arrays go to ``data``, others to
    ``float_data``."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError(f"a Datum holds a 3-D (channels, height, width) array; got shape "
                         f"{arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float64).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def image_file_to_datum(path: str, label: int, height: int = 0, width: int = 0,
                        color: bool = True, encoding: str = "", where: str = ""
                        ) -> caffe_pb2.Datum:
    """Caffe's ReadImageToDatum: a raw ``CxHxW`` BGR Datum of the (resized) image, or with
    ``encoding`` (jpg, png, ...) an encoded one; the file's own bytes are kept when it needs
    no resizing and already has that encoding."""
    img = read_image(path, height, width, color, where or None)
    if not encoding:
        return chw_to_datum(img.transpose(2, 0, 1), label)
    datum = caffe_pb2.Datum()
    ext, enc = extension(path), encoding.lower().lstrip(".")
    if not height and not width and (ext == enc or (enc == "jpg" and ext == "jpeg")):
        with open(path, "rb") as f:
            datum.data = f.read()
    else:
        datum.data = encode_image(img, enc)
    datum.label = int(label)
    datum.encoded = True
    return datum
