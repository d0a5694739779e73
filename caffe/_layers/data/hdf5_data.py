"""HDF5Data: rows of HDF5 datasets, one top per dataset name, ``batch_size`` rows per forward.

``hdf5_data_param { source: "list.txt" batch_size: N shuffle: false }``. The list file names
HDF5 files (whitespace separated); top ``i`` of shape ``(N, *dataset.shape[1:])`` reads the
dataset named like that top. Batches run across file boundaries and wrap around at the end of
the list. With ``shuffle`` the file order is shuffled at set-up and after each pass over the
list, and the rows of a file each time it is (re)entered. No transformation, no backward.
In multi-process TRAIN runs each solver rank keeps every ``solver_count``-th row."""

from __future__ import annotations

import numpy as np
import torch

from caffe._common import LOG, STATE
from caffe.data import naming_layer
from caffe.data.hdf5 import load_datasets
from caffe.data.resume import checked_int, checked_permutation, fields
from caffe.data.sources import read_path_list, resolve
from caffe.errors import FileFormatError, LayerSetupError
from caffe.layer import Layer, Phase
from caffe.registry import register_layer


def _permutation(n: int) -> np.ndarray:
    return torch.randperm(n, generator=STATE.generator).numpy()


@register_layer("HDF5Data")
class HDF5Data(Layer):
    graph_safe = False
    exact_num_bottom_blobs = 0
    min_top_blobs = 1
    has_backward = False

    def setup(self, bottom, top):
        p = self.layer_param.hdf5_data_param
        if self.layer_param.HasField("transform_param"):
            raise LayerSetupError(
                f"Layer '{self.name}' (HDF5Data) does not transform data: remove its "
                "transform_param (store preprocessed data in the HDF5 files)")
        if p.batch_size <= 0:
            raise LayerSetupError(
                f"Layer '{self.name}' (HDF5Data): hdf5_data_param.batch_size must be positive, "
                f"got {p.batch_size}")
        self.batch_size = int(p.batch_size)
        self.shuffle = bool(p.shuffle)
        self.source = p.source
        self.names = list(self.layer_param.top)
        with naming_layer(self):
            LOG.info("Loading list of HDF5 filenames from: %s", p.source)
            self.entries = read_path_list(p.source, "HDF5 list file")
            LOG.info("Number of HDF5 files: %d", len(self.entries))
            self.file_order = np.arange(len(self.entries))
            if self.shuffle:
                self.file_order = _permutation(len(self.entries))
            self.current_file = 0
            self._load_current()
        self.row_shapes = [tuple(a.shape[1:]) for a in self.arrays]
        self.current_row = 0
        self.offset = 0
        for t, shape in zip(top, self.row_shapes):
            t.reshape((self.batch_size, *shape))

    def _load_current(self) -> None:
        self._read_current()
        self.row_order = _permutation(self.rows) if self.shuffle else np.arange(self.rows)

    def _read_current(self) -> None:
        entry = self.entries[self.file_order[self.current_file]]
        path = resolve(entry.path, self.source)
        where = f"line {entry.line} of '{self.source}'"
        LOG.info("Loading HDF5 file: %s", path)
        arrays = load_datasets(path, self.names, where)
        if hasattr(self, "row_shapes"):
            for name, a, shape in zip(self.names, arrays, self.row_shapes):
                if a.shape[1:] != shape:
                    raise FileFormatError(
                        f"HDF5 file '{path}' ({where}): dataset '{name}' has rows of shape "
                        f"{a.shape[1:]}, but the first file's rows are {shape}; every file "
                        "must have the same row shape")
        self.arrays = [torch.from_numpy(a) for a in arrays]
        self.rows = arrays[0].shape[0]
        LOG.info("Successfully loaded %d rows", self.rows)

    def _end_of_file(self) -> None:
        """Caffe's HDF5DataLayer::Next at the last row: next file (reshuffled list after a full
        pass), new row order."""
        if len(self.entries) > 1:
            self.current_file += 1
            if self.current_file == len(self.entries):
                self.current_file = 0
                if self.shuffle:
                    self.file_order = _permutation(len(self.entries))
            self._load_current()
        self.current_row = 0
        if self.shuffle:
            self.row_order = _permutation(self.rows)

    def _kept(self, count: int) -> np.ndarray:
        """Positions (from the current row) of the next ``count`` rows this rank keeps."""
        size, rank = STATE.solver_count, STATE.solver_rank
        if size <= 1 or self.phase == Phase.TEST:
            return np.arange(count)
        return np.nonzero((self.offset + np.arange(count)) % size == rank)[0]

    def state_dict(self) -> dict:
        """The file order, the current file and row, the current file's row order and the
        multi-process offset."""
        return {"file_order": self.file_order.tolist(), "file": self.current_file,
                "row": self.current_row, "row_order": self.row_order.tolist(),
                "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        keys = ("file_order", "file", "row", "row_order", "offset")
        file_order, current, row, row_order, offset = fields(
            state, keys, f"the state of layer '{self.name}'")
        file_order = checked_permutation(file_order, len(self.entries), "the HDF5 file order")
        current = checked_int(current, 0, len(self.entries), "the current HDF5 file")
        offset = checked_int(offset, 0, 1 << 62, "the HDF5 row offset")
        saved = (self.file_order, self.current_file, self.arrays, self.rows)
        self.file_order, self.current_file = file_order, current
        try:
            with naming_layer(self):
                self._read_current()
            row = checked_int(row, 0, self.rows, "the current HDF5 row")
            row_order = checked_permutation(row_order, self.rows, "the HDF5 row order")
        except BaseException:
            self.file_order, self.current_file, self.arrays, self.rows = saved
            raise
        self.current_row, self.row_order, self.offset = row, row_order, offset

    def reshape(self, bottom, top):
        """Shapes are fixed at setup."""

    def forward(self, bottom, top):
        parts: list[list[torch.Tensor]] = [[] for _ in top]
        need = self.batch_size
        with naming_layer(self):
            while need:
                left = self.rows - self.current_row
                kept = self._kept(left)[:need]
                consumed = int(kept[-1]) + 1 if len(kept) == need else left
                rows = torch.from_numpy(self.row_order[self.current_row + kept])
                for part, arr in zip(parts, self.arrays):
                    part.append(arr.index_select(0, rows))
                need -= len(kept)
                self.current_row += consumed
                self.offset += consumed
                if self.current_row == self.rows:
                    self._end_of_file()
        for t, part in zip(top, parts):
            batch = torch.cat(part) if len(part) > 1 else part[0]
            t.tensor = batch.to(device=t.tensor.device, dtype=t.tensor.dtype)
