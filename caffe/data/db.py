"""Key-value databases of serialized Datums, as Caffe's ``db::DB``: LMDB (the ``lmdb``
package) and LevelDB (``plyvel``, an optional extra).

:func:`open_reader` gives records in key order, as Caffe's cursors do; :func:`open_writer`
creates a new database (it must not exist yet, as in Caffe's ``db::NEW`` mode). One process may
open the same database from several readers (a TRAIN and a TEST net, say): they share one
handle, since both libraries refuse a second one."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from caffe._common import LOG
from caffe.errors import CaffeError, FileFormatError
from caffe.proto import caffe_pb2

BACKENDS = ("lmdb", "leveldb")


class BackendUnavailableError(CaffeError, ImportError):
    """The Python package for a database backend is not installed."""


def backend_name(backend: int | str) -> str:
    """``"lmdb"`` or ``"leveldb"`` from a DataParameter.DB value or a (case-insensitive) name."""
    if isinstance(backend, int):
        return "lmdb" if backend == caffe_pb2.DataParameter.LMDB else "leveldb"
    name = str(backend).lower()
    if name not in BACKENDS:
        raise CaffeError(f"unknown database backend '{backend}'; use one of {list(BACKENDS)}")
    return name


def detect_backend(path: str) -> str | None:
    """The backend whose files are at ``path``, or None when it is neither."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "data.mdb")):
            return "lmdb"
        if os.path.exists(os.path.join(path, "CURRENT")):
            return "leveldb"
    elif os.path.isfile(path) and path.endswith(".mdb"):
        return "lmdb"
    return None


def _import_lmdb():
    try:
        import lmdb
    except ImportError:
        raise BackendUnavailableError(
            "the LMDB backend needs the 'lmdb' package: pip install lmdb "
            "(or pip install neocaffe[data])") from None
    return lmdb


def _import_plyvel(path: str):
    try:
        import plyvel
    except ImportError:
        raise BackendUnavailableError(
            f"cannot open LevelDB database '{path}': the LevelDB backend needs the 'plyvel' "
            "package, which is not installed: pip install neocaffe[leveldb] (or pip install "
            "plyvel); or convert the data to LMDB (backend: LMDB, convert_imageset --backend "
            "lmdb)") from None
    return plyvel


# ---------------------------------------------------------------------------- shared handles
_HANDLES: dict[tuple[str, str], list] = {}
_HANDLES_LOCK = threading.Lock()


def _open_handle(backend: str, path: str):
    if backend == "lmdb":
        lmdb = _import_lmdb()
        try:
            return lmdb.open(path, readonly=True, lock=False, subdir=os.path.isdir(path),
                             max_readers=1024, readahead=False)
        except lmdb.Error as e:
            hint = ("; py-lmdb opens a database once per process, so this is most likely your "
                    "own lmdb.open(...) handle (the one that wrote it?): call its close() "
                    "before building the net" if "already open in this process" in str(e)
                    else "")
            raise FileFormatError(f"cannot open LMDB database '{path}': {e}{hint}") from None
    plyvel = _import_plyvel(path)
    try:
        return plyvel.DB(path, create_if_missing=False)
    except Exception as e:  # plyvel raises its own IOError/CorruptionError types
        raise FileFormatError(f"cannot open LevelDB database '{path}': {e}") from None


def _acquire(backend: str, path: str):
    key = (backend, os.path.realpath(path))
    with _HANDLES_LOCK:
        slot = _HANDLES.get(key)
        if slot is None:
            slot = _HANDLES[key] = [_open_handle(backend, path), 0]
        slot[1] += 1
        return slot[0]


def _release(backend: str, path: str) -> None:
    key = (backend, os.path.realpath(path))
    with _HANDLES_LOCK:
        slot = _HANDLES.get(key)
        if slot is None:
            return
        slot[1] -= 1
        if slot[1] <= 0:
            del _HANDLES[key]
            slot[0].close()


# ---------------------------------------------------------------------------- reading
class Reader:
    """Read access to a database: ``records()`` walks it once in key order. Close when
    done."""

    def __init__(self, path: str, backend: int | str = "lmdb") -> None:
        self.path = str(path)
        self.backend = backend_name(backend)
        if not os.path.exists(self.path):
            raise FileFormatError(
                f"{self.backend.upper()} database '{self.path}' does not exist (working "
                f"directory: {os.getcwd()})")
        found = detect_backend(self.path)
        if found is not None and found != self.backend:
            LOG.warning("'%s' is a %s database, not %s; reading it as %s", self.path,
                        found.upper(), self.backend.upper(), found.upper())
            self.backend = found
        self._handle = _acquire(self.backend, self.path)
        self._closed = False
        LOG.info("Opened %s %s", self.backend, self.path)

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` pairs in key order (one pass)."""
        if self._closed:
            raise CaffeError(f"database '{self.path}' is closed")
        if self.backend == "lmdb":
            with self._handle.begin(buffers=False) as txn:
                yield from txn.cursor()
        else:
            it = self._handle.iterator()
            try:
                yield from it
            finally:
                it.close()

    def first(self) -> tuple[bytes, bytes]:
        for rec in self.records():
            return rec
        raise FileFormatError(f"{self.backend.upper()} database '{self.path}' is empty")

    def __len__(self) -> int:
        if self.backend == "lmdb":
            return int(self._handle.stat()["entries"])
        return sum(1 for _ in self.records())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release(self.backend, self.path)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_reader(path: str, backend: int | str = "lmdb") -> Reader:
    """Open an existing database for reading (raises FileFormatError naming the path)."""
    return Reader(path, backend)


# ---------------------------------------------------------------------------- writing
class Writer:
    """A new database. ``put`` buffers records; ``commit`` writes them in one transaction
    (Caffe's tools commit every 1000 records); ``close`` commits what is left."""

    def __init__(self, path: str, backend: int | str = "lmdb") -> None:
        self.path = str(path)
        self.backend = backend_name(backend)
        if os.path.exists(self.path):
            raise FileFormatError(
                f"cannot create {self.backend.upper()} database '{self.path}': it already "
                "exists (remove it first)")
        self._pending: list[tuple[bytes, bytes]] = []
        if self.backend == "lmdb":
            lmdb = _import_lmdb()
            self._map_size = 64 << 20
            try:
                os.makedirs(self.path)
                self._db = lmdb.open(self.path, map_size=self._map_size, subdir=True,
                                     readahead=False, meminit=False)
            except (OSError, lmdb.Error) as e:
                raise FileFormatError(f"cannot create LMDB database '{self.path}': {e}"
                                      ) from None
        else:
            plyvel = _import_plyvel(self.path)
            try:
                self._db = plyvel.DB(self.path, create_if_missing=True, error_if_exists=True,
                                     write_buffer_size=256 << 20)
            except Exception as e:
                raise FileFormatError(f"cannot create LevelDB database '{self.path}': {e}"
                                      ) from None

    def put(self, key: bytes | str, value: bytes) -> None:
        if isinstance(key, str):
            key = key.encode("utf-8")
        self._pending.append((key, value))

    def commit(self) -> None:
        if not self._pending:
            return
        if self.backend == "lmdb":
            self._commit_lmdb()
        else:
            with self._db.write_batch() as batch:
                for k, v in self._pending:
                    batch.put(k, v)
        self._pending = []

    def _commit_lmdb(self) -> None:
        import lmdb

        while True:
            try:
                with self._db.begin(write=True) as txn:
                    for k, v in self._pending:
                        txn.put(k, v)
                return
            except lmdb.MapFullError:
                self._map_size *= 2
                self._db.set_mapsize(self._map_size)

    def close(self) -> None:
        if self._db is not None:
            try:
                self.commit()
            finally:
                self._db.close()
                self._db = None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_writer(path: str, backend: int | str = "lmdb") -> Writer:
    """Create a new database at ``path`` for writing."""
    return Writer(path, backend)
