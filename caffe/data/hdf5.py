"""Reading the datasets an HDF5Data layer serves, with Caffe's checks (the dataset exists, has
at least one axis and a numeric type; all datasets of a file have the same number of rows).

A dataset is only read when its size is plausible: one that declares far more values than the
file stores (unwritten chunks of a huge declared shape), or more than this machine's memory,
is refused before anything of that size is allocated."""

from __future__ import annotations

import os

import h5py
import numpy as np

from caffe.errors import FileFormatError

#: datasets below this many bytes (as float32) are read whatever the file stores for them
_SMALL = 64 << 20
#: HDF5's per-chunk bookkeeping makes datasets of millions of tiny chunks cost gigabytes
_MAX_CHUNKS = 1 << 20
_CHUNKS_PER_READ = 1 << 16


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _read(ds: h5py.Dataset, what: str) -> np.ndarray:
    shape = tuple(int(d) for d in ds.shape)
    nbytes = int(np.prod(shape, dtype=object)) * 4
    per_axis = [-(-d // c) for d, c in zip(shape, ds.chunks)] if ds.chunks else [1]
    n_chunks = int(np.prod(per_axis, dtype=object))
    if nbytes > _SMALL or n_chunks > _CHUNKS_PER_READ:
        stored = ds.id.get_storage_size()
        if stored * 1024 < nbytes:
            raise FileFormatError(
                f"{what} declares shape {shape} ({nbytes} bytes as float32) in {n_chunks} "
                f"chunks, but the file stores only {stored} bytes for it; refusing to expand it")
    if n_chunks > _MAX_CHUNKS:
        raise FileFormatError(
            f"{what} of shape {shape} is split into {n_chunks} chunks of shape {ds.chunks}; "
            f"rewrite it with larger chunks (at most {_MAX_CHUNKS})")
    memory = _memory_bytes()
    if memory is not None and nbytes > memory:
        raise FileFormatError(
            f"{what} of shape {shape} needs {nbytes >> 30} GiB as float32, more than this "
            f"machine's memory ({memory >> 30} GiB)")
    rows = shape[0]
    step = rows
    if ds.chunks:
        band = max(1, n_chunks // max(1, per_axis[0]))  # chunks per band of chunk rows
        step = ds.chunks[0] * max(1, _CHUNKS_PER_READ // band)
    try:
        out = np.empty(shape, dtype=np.float32)
        src = ds if ds.dtype.kind != "b" else ds.astype(np.uint8)
        for start in range(0, rows, max(1, step)):
            out[start:start + step] = src[start:start + step]
        return out
    except (OSError, ValueError, TypeError, MemoryError) as e:
        raise FileFormatError(f"cannot read {what}: {type(e).__name__}: {e}") from None


def load_datasets(path: str, names: list[str], where: str) -> list[np.ndarray]:
    """Datasets ``names`` of the HDF5 file ``path`` as float32 arrays. ``where`` says where the
    file was listed (for error messages)."""
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise FileFormatError(f"HDF5 file '{path}' ({where}) does not exist") from None
    except OSError as e:
        raise FileFormatError(f"cannot open HDF5 file '{path}' ({where}): {e}") from None
    arrays = []
    with f:
        for name in names:
            what = f"HDF5 file '{path}' ({where}): dataset '{name}'"
            try:
                ds = f.get(name)
            except (KeyError, OSError, RuntimeError, ValueError):
                ds = None
            if not isinstance(ds, h5py.Dataset):
                have = sorted(k for k in f if isinstance(f.get(k, getlink=True), h5py.HardLink)
                              and isinstance(f[k], h5py.Dataset))
                raise FileFormatError(
                    f"HDF5 file '{path}' ({where}) has no dataset '{name}'; its datasets are "
                    f"{have}. Each top of an HDF5Data layer reads the dataset of the same name")
            if ds.shape is None or ds.ndim < 1:
                raise FileFormatError(
                    f"{what} is empty or a scalar; it needs at least one axis (the rows)")
            if ds.dtype.kind not in "fiub":
                raise FileFormatError(
                    f"{what} has the unsupported type {ds.dtype}; use a float or integer type")
            arrays.append(_read(ds, what))
    rows = [a.shape[0] for a in arrays]
    if len(set(rows)) > 1:
        detail = ", ".join(f"'{n}': {r}" for n, r in zip(names, rows))
        raise FileFormatError(
            f"HDF5 file '{path}' ({where}): datasets have different numbers of rows ({detail})")
    if rows and rows[0] == 0:
        raise FileFormatError(f"HDF5 file '{path}' ({where}): datasets have no rows")
    return arrays
