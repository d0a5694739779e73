"""Item streams for the prefetching data layers: each ``next_loaders()`` call returns the
loaders of the next batch's items, in Caffe's order (run in the prefetch thread).

:class:`DatumRecords` walks a database in key order, wrapping around; :class:`ImageList`
walks an image list file, reshuffling after each pass when asked. In multi-process TRAIN runs
a rank keeps every ``solver_count``-th record (Caffe's DataLayer::Skip)."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from caffe._common import STATE
from caffe.data.datum import datum_to_chw, parse_datum
from caffe.data.db import Reader
from caffe.data.image import read_image
from caffe.data.prefetch import Loader
from caffe.data.resume import checked_int, checked_permutation, fields, set_rng_state
from caffe.data.sources import ListEntry
from caffe.errors import FileFormatError
from caffe.layer import Phase


def _load_datum(value: bytes, where: str, color: bool | None) -> tuple[np.ndarray, float, str]:
    datum = parse_datum(value, where)
    return datum_to_chw(datum, where, color), float(datum.label), where


def _load_image(path: str, height: int, width: int, color: bool, label: int,
                where: str) -> tuple[np.ndarray, float, str]:
    img = read_image(path, height, width, color, where)
    return img.transpose(2, 0, 1), float(label), where


def _keeps(phase: Phase):
    size, rank = STATE.solver_count, STATE.solver_rank
    if size <= 1 or phase == Phase.TEST:
        return lambda offset: True
    return lambda offset: offset % size == rank


class DatumRecords:
    """Datums of a database, ``batch_size`` per call, starting ``skip`` records in. Its
    position (the next record's index in key order and the multi-process offset) is its
    resume state."""

    def __init__(self, reader: Reader, batch_size: int, color: bool | None, phase: Phase,
                 skip: int = 0) -> None:
        self.reader = reader
        self.batch_size = batch_size
        self.color = color
        self.keep = _keeps(phase)
        #: index (in key order) of the next record to read, wrapping around
        self.next_index = skip
        self.offset = 0
        self._records: Iterator[tuple[int, bytes, bytes]] | None = None

    def loader_for(self, index: int, key: bytes, value: bytes) -> Loader:
        """The loader of record ``index`` (its position in key order)."""
        where = (f"record {index} (key '{key.decode('utf-8', 'replace')}') of "
                 f"{self.reader.backend.upper()} '{self.reader.path}'")
        return functools.partial(_load_datum, value, where, self.color)

    @staticmethod
    def is_encoded(value: bytes) -> bool:
        """Whether a serialized Datum holds an encoded image (False when unreadable)."""
        try:
            return parse_datum(value, "").encoded
        except FileFormatError:
            return False

    def next_loaders(self) -> list[Loader]:
        if self._records is None:
            self._records = self._passes(self.next_index)
        loaders: list[Loader] = []
        while len(loaders) < self.batch_size:
            index, key, value = next(self._records)
            self.next_index = index + 1
            keep = self.keep(self.offset)
            self.offset += 1
            if keep:
                loaders.append(self.loader_for(index, key, value))
        return loaders

    def _passes(self, start: int) -> Iterator[tuple[int, bytes, bytes]]:
        """(index in key order, key, value) forever from record ``start`` on, wrapping around
        at the end."""
        while True:
            count = 0
            for index, (key, value) in enumerate(self.reader.records()):
                count = index + 1
                if index >= start:
                    yield index, key, value
            if not count:
                self.reader.first()  # raises: the database is empty
            start = max(0, start - count)

    def state(self) -> dict:
        return {"index": self.next_index, "offset": self.offset}

    def set_state(self, state: object) -> None:
        """Continue from a position ``state()`` gave (no reader thread may run)."""
        index, offset = fields(state, ("index", "offset"), "the database position")
        index = checked_int(index, 0, 1 << 62, "the database record index")
        offset = checked_int(offset, 0, 1 << 62, "the database offset")
        total = len(self.reader)
        if total and index > total:
            index %= total
        if self._records is not None:
            self._records.close()
            self._records = None
        self.next_index, self.offset = index, offset

    def close(self) -> None:
        if self._records is not None:
            self._records.close()
            self._records = None
        self.reader.close()


class ImageList:
    """Images of a list file (``root_folder + path``), ``batch_size`` per call; with
    ``shuffle`` the order is reshuffled after each pass (the first shuffle happens at set-up).
    Its resume state: the position, the current order and the shuffling generator's state."""

    def __init__(self, entries: list[ListEntry], source: str, root_folder: str,
                 batch_size: int, height: int, width: int, color: bool, shuffle: bool,
                 rng: np.random.Generator, start: int = 0) -> None:
        self.listed = list(entries)
        self.source = source
        self.root = root_folder
        self.batch_size = batch_size
        self.height, self.width = height, width
        self.color = color
        self.shuffle = shuffle
        self.rng = rng
        #: indices into ``listed`` in serving order (a new tuple at each reshuffle)
        self.order: tuple[int, ...] = tuple(range(len(self.listed)))
        self.entries = self.listed
        if shuffle:
            self._reshuffle()
        self.pos = start

    def _reshuffle(self) -> None:
        perm = self.rng.permutation(len(self.order))
        self._set_order(tuple(np.asarray(self.order)[perm].tolist()))

    def _set_order(self, order: tuple[int, ...]) -> None:
        self.order = order
        self.entries = [self.listed[i] for i in order]

    def loader(self, entry: ListEntry) -> Loader:
        where = f"line {entry.line} of '{self.source}'"
        if self.root and not self.root.endswith(("/", "\\")):
            where += f"; root_folder '{self.root}' is prepended as is: end it with '/'"
        return functools.partial(_load_image, self.root + entry.path, self.height,
                                 self.width, self.color, entry.label, where)

    def next_loaders(self) -> list[Loader]:
        loaders = []
        for _ in range(self.batch_size):
            loaders.append(self.loader(self.entries[self.pos]))
            self.pos += 1
            if self.pos >= len(self.entries):
                self.pos = 0
                if self.shuffle:
                    self._reshuffle()
        return loaders

    def state(self) -> dict:
        return {"pos": self.pos, "order": self.order if self.shuffle else None,
                "rng": self.rng.bit_generator.state}

    def set_state(self, state: object) -> None:
        """Continue from a position ``state()`` gave (no reader thread may run)."""
        pos, order, rng = fields(state, ("pos", "order", "rng"), "the image list position")
        n = len(self.listed)
        pos = checked_int(pos, 0, n, "the image list position")
        if self.shuffle:
            order = tuple(checked_permutation(order, n, "the image list order").tolist())
        elif order is not None:
            raise ValueError("the image list order is saved, but this layer does not shuffle")
        set_rng_state(self.rng, rng, "the image list's random state")
        if self.shuffle:
            self._set_order(order)
        self.pos = pos
