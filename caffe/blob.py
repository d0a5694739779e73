"""Blob: Caffe's N-d array pair (``data`` and ``diff``) on top of torch tensors.

Built-in layers compute on ``blob.tensor`` / ``blob.diff_tensor`` (torch, on the current
device). Python layers read and write ``blob.data`` / ``blob.diff``, float32 NumPy arrays that
write through. On the CPU they are zero-copy views of the same memory. On CUDA they follow
Caffe's SyncedMemory rule: host access makes the host copy current and marks it as the newest
(the user may write it); the next device access copies it back.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable

import numpy as np
import torch

from caffe._common import LOG, STATE, tracing
from caffe.errors import ShapeMismatchError

#: blobs smaller than this keep their memory until a layer replaces it (Blob.vacate)
VACATE_MIN_BYTES = 1 << 18

# host-mirror states (only used when the tensors live on a CUDA device)
_HOST_STALE, _HOST_HEAD = 0, 1


class _Transfers:
    """Bytes copied between host mirrors and device tensors (NumPy access in GPU mode)."""

    host_to_device = 0
    device_to_host = 0

    def reset(self) -> None:
        self.host_to_device = self.device_to_host = 0


TRANSFERS = _Transfers()


class _ReleasedDiffs:
    """Bookkeeping for diffs a training pass released (``Net.forward_backward(release_diffs=
    True)``, which ``Solver.step`` uses): ``active`` while such a pass runs (layers may then
    read a released diff as zeros silently), ``warned`` once a user has been told."""

    active = False
    warned = False


RELEASED = _ReleasedDiffs()


def _warn_released_read(blob: Blob) -> None:
    if RELEASED.active or RELEASED.warned:
        return
    RELEASED.warned = True
    LOG.warning(
        "Reading the diff of a blob of shape %s that a training step released: it reads as "
        "zeros. Solver.step frees the diffs of intermediate blobs once backward is done with "
        "them; set solver.keep_blob_diffs = True to keep them (Caffe's behaviour).",
        blob.shape)


def _alive(view: weakref.ref | None) -> bool:
    """Whether a NumPy view handed out (and tracked by this weak reference) still exists."""
    return view is not None and view() is not None


def _still_shown(held: weakref.ref, current: torch.Tensor, value: torch.Tensor) -> bool:
    """Whether a NumPy view of ``current`` is still held, so that ``value`` must be copied
    into ``current``'s memory (Caffe's blobs keep their memory; layers here hand over new
    tensors, which would leave such a view showing old values)."""
    return (held() is not None and value.dtype == current.dtype
            and value.device == current.device and value.data_ptr() != current.data_ptr())


class _HostAccess:
    """NumPy access to a data memory, shared by the blobs that share it (``Blob.share_data``),
    for ``Blob.data_version``: how many times a view was handed out, and those blobs (whose
    live views show the memory)."""

    __slots__ = ("count", "blobs")

    def __init__(self, blob: Blob) -> None:
        self.count = 0
        self.blobs = [weakref.ref(blob)]

    def join(self, blob: Blob) -> None:
        if not any(ref() is blob for ref in self.blobs):
            self.blobs = [ref for ref in self.blobs if ref() is not None] + [weakref.ref(blob)]

    def viewed(self) -> bool:
        """Whether a zero-copy view handed out by one of the blobs is still alive."""
        for ref in self.blobs:
            blob = ref()
            if blob is not None and _alive(blob._held):
                return True
        return False


def _as_shape(args: tuple) -> tuple[int, ...]:
    if len(args) == 1 and isinstance(args[0], Iterable) and not isinstance(args[0], (str, bytes)):
        args = tuple(args[0])
    shape = tuple(d if isinstance(d, torch.SymInt) else int(d) for d in args)  # (traced sizes)
    if any(d < 0 for d in shape):
        raise ShapeMismatchError(f"Blob shape {shape} has a negative dimension")
    return shape


class Blob:
    """An N-d blob of ``data`` and ``diff``.

    ``Blob(shape)`` or ``Blob(*dims)``; ``reshape(*dims)``; ``shape``, ``count``, the legacy
    ``num``/``channels``/``height``/``width``; ``data``/``diff`` (NumPy, write-through) and
    ``tensor``/``diff_tensor`` (torch). The diff is allocated (as zeros) on first use.
    """

    __slots__ = ("_t", "_g", "_hd", "_hg", "_hd_state", "_hg_state", "_dtype", "_released",
                 "_held", "_gheld", "_held_id", "_gheld_id", "_access",
                 "__weakref__")

    def __init__(self, *shape, dtype: torch.dtype = torch.float32,
                 device: torch.device | None = None) -> None:
        self._dtype = dtype
        self._t = torch.zeros(_as_shape(shape), dtype=dtype, device=device or STATE.device)
        self._g: torch.Tensor | None = None
        self._hd: torch.Tensor | None = None
        self._hg: torch.Tensor | None = None
        self._hd_state = _HOST_STALE
        self._hg_state = _HOST_STALE
        self._released = False
        # weak references to the last NumPy views of data and diff handed out on the CPU:
        # while one lives, a new tensor is copied into the memory it shows (below)
        self._held: weakref.ref | None = None
        self._gheld: weakref.ref | None = None
        self._held_id = self._gheld_id = 0  # id() of the tensor each view was made from
        self._access = _HostAccess(self)

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._t.shape)

    @property
    def count(self) -> int:
        return self._t.numel()

    @property
    def num_axes(self) -> int:
        return self._t.dim()

    def count_range(self, start: int, end: int | None = None) -> int:
        """Product of dims ``start`` to ``end`` (exclusive), Caffe's ``count(start, end)``."""
        return math.prod(self._t.shape[start:end])

    def canonical_axis(self, axis: int) -> int:
        """Map a negative axis to its positive index, checking the range."""
        n = self._t.dim()
        if not -n <= axis < n:
            detail = " (a 0-D blob has no axes)" if n == 0 else ""
            raise ShapeMismatchError(
                f"axis {axis} is out of range for a {n}-D blob {self.shape}{detail}")
        return axis + n if axis < 0 else axis

    def _legacy(self, index: int) -> int:
        n = self._t.dim()
        if n > 4:
            raise ShapeMismatchError(
                f"num/channels/height/width are only defined for blobs of at most 4 axes; "
                f"this blob has shape {self.shape}: use .shape"
            )
        return self._t.shape[index] if index < n else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *shape) -> None:
        """Change the shape. Same or smaller count: data and diff keep their memory, as
        Caffe's blobs do (a view of the first elements: values kept, and a NumPy view of the
        data held from before still shows the blob). Larger count: new zeroed memory (Caffe
        would also keep the values of a blob grown back within the size it once had). Takes
        ``reshape(2, 3)``, ``reshape((2, 3))`` or a BlobShape."""
        if len(shape) == 1 and hasattr(shape[0], "dim"):  # caffe_pb2.BlobShape
            shape = tuple(shape[0].dim)
        shape = _as_shape(shape)
        t = self._device_data()
        traced = tracing()  # sizes may be symbolic: comparing them would pin them
        if not traced and tuple(t.shape) == shape:
            return
        n = math.prod(shape)
        if not traced and n <= t.numel():
            self._t = t.reshape(-1)[:n].view(shape)
            if self._g is not None:
                self._g = self._device_diff().reshape(-1)[:n].view(shape)
        else:
            self._t = torch.zeros(shape, dtype=t.dtype, device=t.device)
            self._g = None
            self._released = False
        self._hd = self._hg = None
        self._hd_state = self._hg_state = _HOST_STALE

    def reshape_like(self, other: Blob) -> None:
        self.reshape(other.shape)

    # ------------------------------------------------------------------ torch access
    def _device_data(self) -> torch.Tensor:
        if self._hd_state == _HOST_HEAD:
            self._t.copy_(self._hd, non_blocking=False)
            TRANSFERS.host_to_device += self._hd.nbytes
            self._hd_state = _HOST_STALE
        return self._t

    def _device_diff(self) -> torch.Tensor:
        if self._hg_state == _HOST_HEAD:
            self._g.copy_(self._hg)
            TRANSFERS.host_to_device += self._hg.nbytes
            self._hg_state = _HOST_STALE
        elif self._g is None:
            if self._released:
                _warn_released_read(self)
            self._g = torch.zeros_like(self._t)
        return self._g

    @property
    def tensor(self) -> torch.Tensor:
        """The data as a torch tensor on the compute device (write to it in place, or assign a
        new tensor of the same shape)."""
        if self._hd_state == _HOST_HEAD:
            return self._device_data()
        self._hd_state = _HOST_STALE
        return self._t

    @tensor.setter
    def tensor(self, value: torch.Tensor) -> None:
        self._check_shape(value, "")
        held = self._held
        if held is not None and _still_shown(held, self._t, value):
            self._t.copy_(value)  # a NumPy view the user holds keeps showing the blob
        else:
            self._t = value
            if held is not None and held() is None:
                self._held = None  # the view is gone: skip the check from now on
        self._hd_state = _HOST_STALE

    def _check_shape(self, value: torch.Tensor, what: str) -> None:
        if value.shape != self._t.shape:
            raise ShapeMismatchError(
                f"cannot set {what}a blob of shape {self.shape} to a tensor of shape "
                f"{tuple(value.shape)}: call blob.reshape first")

    def data_version(self) -> tuple[int, int, int] | None:
        """A token that changes whenever the data may have changed, for caches of values
        derived from it: the memory, torch's in-place version counter, and the NumPy views
        handed out by this blob or one sharing its memory (writes through NumPy bypass the
        counter, so each ``data`` access counts as a change). None while such a view is still
        alive on the CPU, as a write through it would go unseen."""
        access = self._access
        if access.viewed():
            return None
        t = self.tensor  # a newer host copy (GPU mode) is copied over first, a versioned write
        return (t.data_ptr(), t._version, access.count)

    def host_tensor(self) -> torch.Tensor | None:
        """The data as a CPU tensor when reading it needs no wait for the device (the blob's
        own memory on the CPU, or NumPy writes not yet copied to the device); else None.
        Read only: a write to it may not reach the blob."""
        if self._t.device.type == "cpu":
            return self._device_data()
        return self._hd if self._hd_state == _HOST_HEAD else None

    def vacate(self) -> None:
        """Let go of the data memory, which a layer is about to replace with a new tensor, so
        that the allocator can hand that memory back to it. Until then the data reads as
        garbage of the same shape. Kept while a NumPy view of it is alive, while a newer host
        copy waits to be copied over, and below ``VACATE_MIN_BYTES`` (where the few
        microseconds this takes outweigh what reusing the memory saves)."""
        t = self._t
        if (not _alive(self._held) and self._hd_state != _HOST_HEAD
                and t.numel() * t.element_size() >= VACATE_MIN_BYTES):
            self._t = torch.empty((), dtype=t.dtype, device=t.device).expand(t.shape)

    def refill_vacated(self) -> None:
        """Give data let go of by ``vacate``, and not replaced since (its layer failed), zeroed
        memory again, so that the blob reads and takes NumPy writes as usual."""
        t = self._t
        if t.numel() > 1 and not any(t.stride()):
            self._t = torch.zeros(t.shape, dtype=t.dtype, device=t.device)

    def vacate_diff(self) -> None:
        """The same for the diff (which then reads as zeros until assigned)."""
        g = self._g
        if (g is not None and not _alive(self._gheld) and self._hg_state != _HOST_HEAD
                and g.numel() * g.element_size() >= VACATE_MIN_BYTES):
            self._g = None

    def swap_tensor(self, value: torch.Tensor) -> None:
        """Hand the blob a new data tensor and let go of the old memory, which the caller keeps
        (an in-place layer keeping its input for the backward): unlike assigning ``tensor``,
        nothing is copied into the old memory for NumPy views taken earlier."""
        self._check_shape(value, "")
        self._t = value
        self._held = None
        self._hd_state = _HOST_STALE

    @property
    def diff_tensor(self) -> torch.Tensor:
        """The diff as a torch tensor on the compute device (allocated as zeros on first use)."""
        g = self._device_diff()
        self._hg_state = _HOST_STALE
        return g

    @diff_tensor.setter
    def diff_tensor(self, value: torch.Tensor) -> None:
        self._check_shape(value, "the diff of ")
        if self._gheld is not None and self._g is not None and _still_shown(
                self._gheld, self._g, value):
            self._g.copy_(value)
        else:
            self._g = value
            if self._gheld is not None and self._gheld() is None:
                self._gheld = None
        self._hg_state = _HOST_STALE

    @property
    def has_diff(self) -> bool:
        """Whether a diff has been allocated (an unallocated diff reads as zeros)."""
        return self._g is not None

    def release_diff(self) -> None:
        """Drop the diff (it reads as zeros again, allocated on the next use). Training steps
        call this for intermediate blobs once backward is done with their diffs."""
        self._g = None
        self._hg_state = _HOST_STALE
        self._released = True

    # ------------------------------------------------------------------ NumPy access
    def _host(self, t: torch.Tensor, mirror: torch.Tensor | None, state: int):
        if t.device.type == "cpu":
            return (t.detach() if t.requires_grad else t).numpy(), None, _HOST_STALE
        if mirror is None or mirror.shape != t.shape or mirror.dtype != t.dtype:
            mirror = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            state = _HOST_STALE
        if state == _HOST_STALE:
            mirror.copy_(t.detach())
            TRANSFERS.device_to_host += mirror.nbytes
        return mirror.numpy(), mirror, _HOST_HEAD

    @property
    def data(self) -> np.ndarray:
        """The data as a NumPy array that writes through to the blob."""
        self._access.count += 1
        if self._hd_state == _HOST_HEAD:
            return self._hd.numpy()
        if self._held is not None and self._held_id == id(self._t):
            arr = self._held()  # the view handed out before, still alive (it keeps its tensor
            if arr is not None:  # alive, so the id is that tensor's): one object per memory
                return arr
        arr, self._hd, self._hd_state = self._host(self._t, self._hd, self._hd_state)
        if self._hd is None and not self._t.requires_grad:  # a zero-copy view of _t itself
            self._held, self._held_id = weakref.ref(arr), id(self._t)
        return arr

    @data.setter
    def data(self, value) -> None:
        self.data[...] = value

    @property
    def diff(self) -> np.ndarray:
        """The diff as a NumPy array that writes through to the blob."""
        if self._hg_state == _HOST_HEAD:
            return self._hg.numpy()
        g = self._device_diff()
        if not g.is_contiguous() or g.untyped_storage().nbytes() != g.numel() * g.element_size():
            # a view into another blob's diff (Concat hands out slices of its top's diff):
            # NumPy writes must not reach that blob, as Caffe's separate memory would not
            self._g = g = g.contiguous() if not g.is_contiguous() else g.clone()
        if self._gheld is not None and self._gheld_id == id(g):
            arr = self._gheld()
            if arr is not None:
                return arr
        arr, self._hg, self._hg_state = self._host(g, self._hg, self._hg_state)
        if self._hg is None and not g.requires_grad:
            self._gheld, self._gheld_id = weakref.ref(arr), id(g)
        return arr

    @diff.setter
    def diff(self, value) -> None:
        self.diff[...] = value

    # ------------------------------------------------------------------ device moves
    def to(self, device: torch.device) -> None:
        """Move data and diff to ``device`` (keeping their contents)."""
        t = self._device_data()
        if t.device != device:
            self._t = t.to(device)
            if self._g is not None:
                self._g = self._device_diff().to(device)
            self._hd = self._hg = None
            self._hd_state = self._hg_state = _HOST_STALE

    def share_data(self, other: Blob) -> None:
        """Use ``other``'s data memory (counts must match; this blob keeps its shape)."""
        if other.count != self.count:
            raise ShapeMismatchError(
                f"cannot share data: counts differ ({self.count} vs {other.count})")
        self._t = other.tensor.view(self.shape)
        self._hd, self._hd_state = None, _HOST_STALE
        other._access.join(self)  # a NumPy write through either is a write to both
        self._access = other._access

    def share_diff(self, other: Blob) -> None:
        """Use ``other``'s diff memory (counts must match)."""
        if other.count != self.count:
            raise ShapeMismatchError(
                f"cannot share diff: counts differ ({self.count} vs {other.count})")
        self._g = other.diff_tensor.view(self.shape)
        self._hg, self._hg_state = None, _HOST_STALE
        self._released = False

    def __repr__(self) -> str:
        return f"<caffe.Blob shape={self.shape} dtype={str(self._t.dtype)[6:]}>"


class TorchBlobView:
    """A blob as seen by a layer that sets ``torch_blobs = True``: ``data`` and ``diff`` are the
    torch tensors on the compute device (no host copies in GPU mode); everything else is the
    blob's."""

    __slots__ = ("blob",)

    def __init__(self, blob: Blob) -> None:
        self.blob = blob

    @property
    def data(self) -> torch.Tensor:
        return self.blob.tensor

    @data.setter
    def data(self, value: torch.Tensor) -> None:
        self.blob.tensor = value

    @property
    def diff(self) -> torch.Tensor:
        return self.blob.diff_tensor

    @diff.setter
    def diff(self, value: torch.Tensor) -> None:
        self.blob.diff_tensor = value

    def __getattr__(self, name: str):
        return getattr(self.blob, name)

    def __setattr__(self, name: str, value) -> None:
        if name == "blob":
            object.__setattr__(self, name, value)
        elif name in ("data", "diff"):
            object.__setattr__(self, name, value)  # the properties above
        else:
            setattr(self.blob, name, value)

    def __repr__(self) -> str:
        return f"<TorchBlobView of {self.blob!r}>"


class BlobVec(list):
    """A list of blobs (a layer's learnable parameters). ``add_blob(*shape)`` appends a new
    zero blob, as in pycaffe's Python layers."""

    def add_blob(self, *shape) -> Blob:
        blob = Blob(*shape)
        self.append(blob)
        return blob
