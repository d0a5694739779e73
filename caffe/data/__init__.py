"""Data input for Caffe's data layers and tools: databases of Datums (LMDB, LevelDB), list
files, HDF5 sources, image decoding with OpenCV's conventions (BGR, CHW), Caffe's
DataTransformer and a background batch prefetcher.

Errors about inputs are :class:`caffe.errors.FileFormatError` naming the file and the record or
line; :func:`naming_layer` prefixes them with the layer that was reading."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from caffe.errors import CaffeError


@contextmanager
def naming_layer(layer) -> Iterator[None]:
    """Re-raise a CaffeError from the block with ``Layer '<name>' (<type>):`` in front, keeping
    its class (so the net keeps it as it is instead of wrapping it)."""
    try:
        yield
    except CaffeError as e:
        prefix = f"Layer '{layer.name}' ({layer.type})"
        if f"'{layer.name}'" in str(e):
            raise
        raise type(e)(f"{prefix}: {e}") from e
