"""SGD with momentum (Caffe's SGDSolver), and the machinery every update rule shares.

Per iteration, with rate r from the lr policy and, for each learnable parameter W with gradient
g (the diff accumulated over ``iter_size`` passes), local rate ``r * lr_mult`` and local decay
``weight_decay * decay_mult``, Caffe's ApplyUpdate does, in this order:

1. clip: when ``clip_gradients >= 0`` and the L2 norm of all diffs together exceeds it, scale
   every diff by ``clip_gradients / norm``;
2. normalize: ``g /= iter_size``;
3. regularize: ``g += local_decay * W`` (L2) or ``g += local_decay * sign(W)`` (L1);
4. compute the update (the rule; SGD: ``V = momentum * V + local_rate * g``, update ``V``);
5. apply: ``W -= update``.

The history (``V`` here; one or two buffers per parameter for the other rules) is saved in the
solver state next to the iteration and the lr policy's step counter.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from caffe import model_io
from caffe._common import LOG
from caffe.errors import CaffeError
from caffe.proto import caffe_pb2, files
from caffe.solvers import resume
from caffe.solvers.lr_policy import check_policy, learning_rate
from caffe.solvers.solver import Solver, SolverFileError, register_solver


def f32(x: float) -> float:
    """``x`` rounded to float32, as Caffe's single-precision solver holds its scalars."""
    return float(np.float32(x))


@register_solver("SGD")
class SGDSolver(Solver):
    """Stochastic gradient descent with momentum; the base of every other update rule."""

    #: history buffers per learnable parameter (Caffe's history_ holds this many sets)
    history_sets: ClassVar[int] = 1

    def _check_param(self) -> None:
        super()._check_param()
        p = self._param
        check_policy(p, self._source)
        if p.weight_decay and p.regularization_type not in ("L1", "L2"):  # (Caffe: once used)
            raise self._fail(f"unknown regularization_type '{p.regularization_type}'; use L1 "
                             "or L2")

    def _pre_solve(self) -> None:
        params = self.net.learnable_params
        self.history = [torch.zeros_like(p.tensor) for _ in range(self.history_sets)
                        for p in params]
        self._at_rest = [True] * len(params)

    def _moving(self, rates: list[float]) -> list[int]:
        """The parameters this update may change. Every rule's update is the local rate times
        a finite function of the histories and a finite diff, except SGD's and Nesterov's,
        which add the momentum history: so a parameter whose local rate was 0 at every step
        since its history was all zeros (a frozen layer, BatchNorm's statistics) gets an
        update of exactly 0, and W - 0 = W. Leaving it untouched keeps its memory's version,
        so values derived from it stay cached (BatchNorm's statistics: about nine small
        kernels per BatchNorm per step otherwise). A diff holding Inf or NaN would have made
        such a parameter NaN in Caffe."""
        at_rest = self._at_rest
        for i, r in enumerate(rates):
            if r:
                at_rest[i] = False
        return [i for i, rest in enumerate(at_rest) if not rest]

    # ------------------------------------------------------------------ learning rate
    @property
    def lr(self) -> float:
        """The learning rate of the next update (at the current ``iter``)."""
        return learning_rate(self._param, self.iter, self.current_step)[0]

    def get_learning_rate(self) -> float:
        """The rate for the current iteration, advancing the policy's step counter as Caffe's
        GetLearningRate does."""
        rate, self.current_step = learning_rate(self._param, self.iter, self.current_step)
        return rate

    # ------------------------------------------------------------------ the update
    def apply_update(self) -> None:
        p = self._param
        rate = self.get_learning_rate()
        if p.display and self.iter % p.display == 0:
            LOG.info("Iteration %d, lr = %g", self.iter, rate)
        params = self.net.learnable_params
        if not params:
            return
        data = [b.tensor for b in params]
        diffs = [b.diff_tensor for b in params]
        if self.history[0].device != data[0].device:
            self.history = [h.to(data[0].device) for h in self.history]
        self._clip_gradients(diffs)
        if p.iter_size != 1:
            torch._foreach_mul_(diffs, f32(1.0 / p.iter_size))
        self._regularize(data, diffs)
        lr = np.float32(rate) * np.asarray(self.net.params_lr, dtype=np.float32)
        rates = lr.tolist()
        self.compute_update_value(diffs, rates)
        moving = self._moving(rates)
        if len(moving) < len(data):
            data, diffs = [data[i] for i in moving], [diffs[i] for i in moving]
        if data:
            torch._foreach_sub_(data, diffs)

    def _clip_gradients(self, diffs: list[torch.Tensor]) -> None:
        clip = self._param.clip_gradients
        if clip < 0:
            return
        norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(diffs))))
        if norm > clip:
            scale = f32(clip / norm)
            LOG.info("Gradient clipping: scaling down gradients (L2 norm %g > %g) by scale "
                     "factor %g", norm, clip, scale)
            torch._foreach_mul_(diffs, scale)

    def _regularize(self, data: list[torch.Tensor], diffs: list[torch.Tensor]) -> None:
        p = self._param
        decay = np.float32(p.weight_decay) * np.asarray(self.net.params_weight_decay,
                                                        dtype=np.float32)
        # one fused call per distinct local decay (parameters with decay 0 are left alone)
        groups: dict[float, list[int]] = {}
        for i, d in enumerate(decay.tolist()):
            if d:
                groups.setdefault(d, []).append(i)
        for d, idx in groups.items():
            ws = [data[i] for i in idx]
            if p.regularization_type == "L1":
                ws = torch._foreach_sign(ws)
            torch._foreach_add_([diffs[i] for i in idx], ws, alpha=d)

    def compute_update_value(self, diffs: list[torch.Tensor], rates: list[float]) -> None:
        """Replace every diff by its update; ``rates`` are the local rates."""
        momentum = f32(self._param.momentum)
        # V = rate * g + momentum * V, formed in the diff (which holds the update afterwards,
        # as in Caffe) and copied to the history: one pass over the parameters fewer than
        # scaling the history first
        torch._foreach_mul_(diffs, rates)
        torch._foreach_add_(diffs, self.history, alpha=momentum)
        torch._foreach_copy_(self.history, diffs)

    # ------------------------------------------------------------------ solver state
    def _param_names(self) -> list[str]:
        """``layer[index]`` of every learnable parameter, for messages."""
        net = self.net
        names = [""] * len(net.learnable_params)
        for net_pid, owner in enumerate(net._param_owners):
            if owner < 0:
                li, pid = net._param_layer_indices[net_pid]
                names[net._learnable_param_ids[net_pid]] = f"{net._layer_names[li]}[{pid}]"
        return names

    def _snapshot_solver_state(self, model_filename: str) -> None:
        hdf5 = self._param.snapshot_format == caffe_pb2.SolverParameter.HDF5
        arrays = [h.detach().cpu().numpy() for h in self.history]
        extra = resume.encode(self.net, self.iter)
        if hdf5:
            path = self.snapshot_filename(".solverstate.h5")
            LOG.info("Snapshotting solver state to HDF5 file %s", path)
            files.write_atomic(path, _state_to_hdf5(self.iter, model_filename,
                                                    self.current_step, arrays, extra))
            return
        path = self.snapshot_filename(".solverstate")
        LOG.info("Snapshotting solver state to binary proto file %s", path)
        files.write_atomic(resume.sidecar_path(path), extra)
        state = caffe_pb2.SolverState(iter=self.iter, learned_net=model_filename,
                                      current_step=self.current_step)
        for arr in arrays:
            state.history.add().CopyFrom(model_io.array_to_blobproto(arr))
        files.write_binary(path, state)

    def restore(self, state_file: str, exact: bool = False) -> None:
        path = os.fspath(state_file)
        reader = _state_from_hdf5 if path.endswith(".h5") else _state_from_proto
        try:
            it, learned, step, arrays, extra = reader(path, self._check_history, exact)
        except SolverFileError:
            raise
        except (CaffeError, OSError, KeyError, ValueError, TypeError) as e:
            raise SolverFileError(f"cannot read the solver state '{path}': {e}") from None
        if it < 0 or step < 0:
            raise SolverFileError(f"solver state '{path}' holds a negative iteration ({it}) or "
                                  f"lr policy step ({step})")
        if learned:
            weights = _resolve_learned_net(path, learned)
            try:
                self.net.copy_from(weights)
            except CaffeError as e:
                raise SolverFileError(
                    f"solver state '{path}': cannot load its learned net '{weights}' into net "
                    f"'{self.net.name}': {e}") from None
        LOG.info("%s: restoring history", type(self).__name__)
        for h, arr in zip(self.history, arrays):
            h.copy_(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
                    .reshape(h.shape))
        n = len(self._at_rest)
        self._at_rest = [not any(np.any(arrays[k]) for k in range(i, len(arrays), n))
                         for i in range(n)]
        self.iter = it
        self.current_step = step
        if not exact:
            resume.log_restart(path)
        elif extra is None:
            resume.log_missing(path)
        else:
            resume.apply(self.net, *extra, it)

    def _check_history(self, path: str, shapes: list[tuple[int, ...]]) -> None:
        """Raise unless ``shapes`` (of the state's history blobs, before their data is read)
        fit this solver's history."""
        n = len(self.net.learnable_params)
        if len(shapes) != len(self.history):
            raise SolverFileError(
                f"solver state '{path}' holds {len(shapes)} history blobs, but a "
                f"{self.type_name} solver on net '{self.net.name}' ({n} learnable parameters) "
                f"needs {len(self.history)}: the state belongs to another net or solver type")
        names = self._param_names() * self.history_sets
        for i, (h, shape) in enumerate(zip(self.history, shapes)):
            size = math.prod(shape) if all(d >= 0 for d in shape) else -1
            if size != h.numel():
                raise SolverFileError(
                    f"solver state '{path}': history blob {i} has shape {tuple(shape)}, but "
                    f"parameter {names[i]} of net '{self.net.name}' has shape "
                    f"{tuple(h.shape)}: the state belongs to another net")


# ---------------------------------------------------------------------------- state files
def _state_to_hdf5(it: int, learned_net: str, current_step: int,
                   history: list[np.ndarray], extra: bytes) -> bytes:
    """Caffe's HDF5 solver state, with the resume state ``extra`` in a dataset Caffe
    ignores."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("iter", data=np.int32(it))
        f.create_dataset("learned_net", data=np.bytes_(learned_net.encode("utf-8")))
        f.create_dataset("current_step", data=np.int32(current_step))
        group = f.create_group("history")
        for i, arr in enumerate(history):
            group.create_dataset(str(i), data=arr)
        f.create_dataset(resume.HDF5_DATASET, data=np.frombuffer(extra, np.uint8))
    return buf.getvalue()


HistoryCheck = Callable[[str, list[tuple[int, ...]]], None]
#: what a solver state reader returns: iteration, learned net, lr policy step, history, and
#: the resume state with the file it came from (None when the snapshot has none, or when the
#: reader was not asked for it)
StateContents = tuple[int, str, int, list[np.ndarray], tuple[bytes, str] | None]


def _state_from_hdf5(path: str, check: HistoryCheck, exact: bool) -> StateContents:
    """Read Caffe's HDF5 solver state: scalars ``iter``, ``current_step``, the string
    ``learned_net``, the group ``history`` of datasets ``0``..``n-1`` and, for an ``exact``
    resume, our ``resume_state`` (uint8 dataset of JSON) when present."""
    import h5py

    if not os.path.exists(path):
        raise SolverFileError(f"solver state file '{path}' does not exist")
    with h5py.File(path, "r") as f:
        it = _hdf5_int(f, "iter", path)
        step = _hdf5_int(f, "current_step", path) if "current_step" in f else 0
        learned = ""
        if "learned_net" in f:
            ds = f["learned_net"]
            if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "SO" or ds.size != 1:
                raise SolverFileError(f"{path}: 'learned_net' must be a string dataset")
            raw = np.asarray(ds[()]).reshape(-1)[0]
            learned = (raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)).rstrip("\0")
        group = f.get("history")
        if not isinstance(group, h5py.Group):
            raise SolverFileError(f"{path}: no 'history' group of datasets")
        datasets = [group.get(str(i)) for i in range(len(group))]
        if not all(isinstance(d, h5py.Dataset) for d in datasets):
            raise SolverFileError(f"{path}: 'history' must hold datasets named 0 to "
                                  f"{len(group) - 1}; it holds {sorted(group)}")
        check(path, [tuple(d.shape or ()) for d in datasets])
        arrays = [np.asarray(d[()], dtype=np.float32) for d in datasets]
        extra = None
        if exact and resume.HDF5_DATASET in f:
            ds = f[resume.HDF5_DATASET]
            if not isinstance(ds, h5py.Dataset) or ds.dtype != np.uint8 or ds.ndim != 1 \
                    or ds.size > resume.MAX_BYTES:
                raise SolverFileError(f"{path}: '{resume.HDF5_DATASET}' must be a 1-D uint8 "
                                      f"dataset of at most {resume.MAX_BYTES} bytes")
            extra = (np.asarray(ds[()]).tobytes(), f"{path}:{resume.HDF5_DATASET}")
    return it, learned, step, arrays, extra


def _hdf5_int(f, key: str, path: str) -> int:
    import h5py

    ds = f.get(key)
    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "iu" or ds.size != 1:
        raise SolverFileError(f"{path}: '{key}' must be a scalar integer dataset")
    return int(np.asarray(ds[()]).reshape(-1)[0])


def _state_from_proto(path: str, check: HistoryCheck, exact: bool) -> StateContents:
    """Read a binary SolverState and, for an ``exact`` resume, the resume state sidecar next
    to it, if any."""
    state = files.read_binary(path, caffe_pb2.SolverState())
    check(path, [model_io.proto_shape(bp) for bp in state.history])
    arrays = [model_io.blobproto_to_array(bp, f"{path}: history blob {i}")
              for i, bp in enumerate(state.history)]
    return (state.iter, state.learned_net, state.current_step, arrays,
            resume.read_sidecar(path) if exact else None)


def _resolve_learned_net(state_file: str, learned: str) -> str:
    """The weights file a solver state names: as written (relative to the working directory, as
    in Caffe), else next to the state file."""
    if "\0" in learned:
        raise SolverFileError(f"solver state '{state_file}' names an invalid learned net "
                              f"{learned!r}")
    folder = os.path.dirname(state_file)
    candidates = [learned, os.path.join(folder, learned),
                  os.path.join(folder, os.path.basename(learned))]
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise SolverFileError(
        f"solver state '{state_file}' names the learned net '{learned}', which was not found "
        f"(looked for {', '.join(dict.fromkeys(candidates))})")
