"""Solver: Caffe's training loop, shared by every update rule.

A solver reads a SolverParameter (a ``solver.prototxt``), builds the train net (NetState phase
TRAIN merged with the net's own state and ``train_state``) and the test nets (phase TEST merged
with ``test_state``), and runs Caffe's ``Step``: per iteration it clears the parameter diffs,
tests every ``test_interval`` iterations, runs ``iter_size`` forward/backward passes, smooths the
loss over ``average_loss`` iterations, logs every ``display`` iterations, applies the update
(the subclass's rule), increments ``iter`` and snapshots every ``snapshot`` iterations.

Paths in the solver file (``net``, ``train_net``, ``test_net``, ``snapshot_prefix``) are
relative to the working directory, as in Caffe. A solver read from a file gets Caffe's
defaults for ``snapshot_prefix``: the solver file's path without its extension when unset, and
``<folder>/<solver file stem>`` when it names a folder.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable
from typing import ClassVar

import torch

from caffe import model_io
from caffe._common import LOG, root_solver, set_random_seed, solver_rank
from caffe.errors import CaffeError, FileFormatError, SolverError
from caffe.net import Net
from caffe.proto import caffe_pb2, files, upgrade


class SolverFileError(SolverError, FileFormatError):
    """A file the solver needs (solver, net, solver state, learned net) is missing or unreadable.
    It is both a SolverError and a FileFormatError."""


class SolverAction(enum.IntFlag):
    """What an action function (``Solver.set_action_function``) asks for after an iteration:
    nothing, stop training, take a snapshot, or both."""

    NONE = 0
    STOP = 1
    SNAPSHOT = 2


SOLVER_TYPES: dict[str, type[Solver]] = {}


def register_solver(type_name: str) -> Callable[[type[Solver]], type[Solver]]:
    """Class decorator: ``type: "<type_name>"`` in a solver file builds this class."""

    def deco(cls: type[Solver]) -> type[Solver]:
        cls.type_name = type_name
        SOLVER_TYPES[type_name] = cls
        return cls

    return deco


def solver_class(type_name: str, source: str = "solver") -> type[Solver]:
    """The solver class registered for ``type_name``; SolverError lists the known types."""
    try:
        return SOLVER_TYPES[type_name]
    except KeyError:
        raise SolverError(
            f"{source}: unknown solver type '{type_name}'; known types: "
            f"{', '.join(SOLVER_TYPES)}") from None


# ---------------------------------------------------------------------------- parameters
def upgrade_snapshot_prefix(param: caffe_pb2.SolverParameter, solver_file: str) -> None:
    """Caffe's default snapshot prefix for a solver read from ``solver_file``."""
    stem = os.path.splitext(solver_file)[0]
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = stem
        LOG.info("snapshot_prefix was not specified and is set to %s", stem)
    elif os.path.isdir(param.snapshot_prefix):
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, os.path.basename(stem))
        LOG.info("snapshot_prefix was a directory and is replaced by %s", param.snapshot_prefix)


def read_solver_param(path: str) -> caffe_pb2.SolverParameter:
    """Read and upgrade a solver prototxt."""
    try:
        param = files.read_text(path, caffe_pb2.SolverParameter())
    except CaffeError as e:
        raise SolverFileError(f"cannot read the solver file: {e}") from None
    upgrade.upgrade_solver_as_needed(param, path)
    upgrade_snapshot_prefix(param, path)
    return param


def load_solver_param(solver) -> tuple[caffe_pb2.SolverParameter, str]:
    """``(param, source)`` from a solver file path or a SolverParameter (copied)."""
    if isinstance(solver, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(solver)
        upgrade.upgrade_solver_as_needed(param)
        return param, "<SolverParameter>"
    if isinstance(solver, (str, bytes, os.PathLike)):
        path = os.fsdecode(solver)
        return read_solver_param(path), path
    raise TypeError(f"a solver needs a solver file path or a caffe_pb2.SolverParameter, got "
                    f"{type(solver).__name__}")


def load_weights(net: Net, model_list: str) -> None:
    """Copy weights from a comma-separated list of caffemodel / HDF5 files (Caffe's
    LoadNetWeights)."""
    for name in model_list.split(","):
        name = name.strip()
        LOG.info("Finetuning from %s", name)
        net.copy_from(name)


# ---------------------------------------------------------------------------- the solver
class Solver:
    """Base class of the solvers (pycaffe's ``caffe.Solver``): the training loop, testing and
    snapshots. Subclasses hold the parameter history and implement ``apply_update``."""

    type_name: ClassVar[str] = "Solver"
    #: keep every blob diff through ``step`` as Caffe does (set True on a solver, or on the
    #: class, to read intermediate diffs after a step); by default ``step`` frees them early
    keep_blob_diffs: bool = False

    def __init__(self, solver, source: str | None = None,
                 allow_python_layers: bool = True) -> None:
        self._allow_python_layers = allow_python_layers
        param, self._source = load_solver_param(solver)
        self._source = source or self._source
        self._param = param
        LOG.info("Initializing solver from parameters: \n%s", files.to_text(param))
        self._check_param()
        self._check_snapshot_prefix()
        if param.random_seed >= 0:
            set_random_seed(param.random_seed + solver_rank())
        self.net = self._init_train_net()
        self.test_nets = self._init_test_nets()
        LOG.info("Solver scaffolding done.")
        self.iter = 0
        self.current_step = 0
        self.requested_early_exit = False
        self.smoothed_loss = 0.0
        self.mean_scores: list[list[float]] = [[] for _ in self.test_nets]
        self._losses: list[float] = []
        self._callbacks: list[tuple[Callable[[], None] | None, Callable[[], None] | None]] = []
        self._action_function: Callable[[], SolverAction] | None = None
        self._last_snapshot_iter: int | None = None
        #: the weights files written by snapshot(), oldest first
        self.snapshots: list[str] = []
        self._pre_solve()

    # ------------------------------------------------------------------ set-up
    @property
    def param(self) -> caffe_pb2.SolverParameter:
        """The live SolverParameter: changing a field (``solver.param.base_lr = 0.1``) affects
        the following iterations."""
        return self._param

    @property
    def type(self) -> str:
        return self.type_name

    def _fail(self, message: str) -> SolverError:
        return SolverError(f"{self._source}: {message}")

    def _check_param(self) -> None:
        """Reject inconsistent parameters before any net is built."""
        p = self._param
        if p.average_loss < 1:
            raise self._fail(f"average_loss must be >= 1, got {p.average_loss}")
        if p.iter_size < 1:
            raise self._fail(f"iter_size must be >= 1, got {p.iter_size}")
        train_fields = [f for f in ("net", "net_param", "train_net", "train_net_param")
                        if p.HasField(f)]
        if len(train_fields) != 1:
            raise self._fail(
                "give exactly one train net with one of net, net_param, train_net, "
                f"train_net_param; got {train_fields or 'none'}")
        generic = p.HasField("net") + p.HasField("net_param")
        explicit = len(p.test_net) + len(p.test_net_param)
        n_iter = len(p.test_iter)
        if (generic and n_iter < explicit) or (not generic and n_iter != explicit):
            raise self._fail(
                f"test_iter must be given once per test net: {explicit} test_net/test_net_param "
                f"and {n_iter} test_iter values" + (
                    "" if generic else " (without net/net_param there is no generic net to "
                    "test, so every test_iter needs a test_net or test_net_param)"))
        if p.test_state and len(p.test_state) != n_iter:
            raise self._fail(f"give test_state once per test net ({n_iter}) or not at all; got "
                             f"{len(p.test_state)}")
        if n_iter and p.test_interval <= 0:
            raise self._fail(f"{n_iter} test net(s) need test_interval > 0, got "
                             f"{p.test_interval}")
        if any(n < 0 for n in p.test_iter):  # 0 (as Caffe): the test logs no outputs
            raise self._fail(f"test_iter must not be negative, got {list(p.test_iter)}")
        if p.snapshot < 0 or p.display < 0 or p.test_interval < 0:
            raise self._fail("snapshot, display and test_interval must not be negative")

    def _check_snapshot_prefix(self) -> None:
        p = self._param
        if not p.snapshot:
            return
        if not p.HasField("snapshot_prefix"):
            raise self._fail("snapshot is specified but snapshot_prefix is not")
        folder = os.path.dirname(p.snapshot_prefix) or "."
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise self._fail(f"cannot create the snapshot folder '{folder}' for snapshot_prefix "
                             f"'{p.snapshot_prefix}': {e.strerror}") from None
        if not os.access(folder, os.W_OK):
            raise self._fail(f"cannot write to snapshot prefix '{p.snapshot_prefix}': the "
                             f"folder '{folder}' is not writable")

    def _read_net(self, path: str, what: str) -> caffe_pb2.NetParameter:
        try:
            return files.read_text(path, caffe_pb2.NetParameter())
        except CaffeError as e:
            raise SolverFileError(
                f"{self._source}: cannot read the {what} '{path}' (relative paths are resolved "
                f"against the working directory {os.getcwd()}): {e}") from None

    def _build_net(self, net_param: caffe_pb2.NetParameter, phase: int,
                   extra_state: caffe_pb2.NetState | None) -> Net:
        state = caffe_pb2.NetState(phase=phase)
        state.MergeFrom(net_param.state)
        if extra_state is not None:
            state.MergeFrom(extra_state)
        net_param.state.CopyFrom(state)
        net = Net(net_param, phase=state.phase, level=state.level,
                  allow_python_layers=self._allow_python_layers)
        for weights in self._param.weights:
            load_weights(net, weights)
        return net

    def _init_train_net(self) -> Net:
        p = self._param
        if p.HasField("train_net_param"):
            LOG.info("Creating training net specified in train_net_param.")
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(p.train_net_param)
        elif p.HasField("train_net"):
            LOG.info("Creating training net from train_net file: %s", p.train_net)
            net_param = self._read_net(p.train_net, "train_net file")
        elif p.HasField("net_param"):
            LOG.info("Creating training net specified in net_param.")
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(p.net_param)
        else:
            LOG.info("Creating training net from net file: %s", p.net)
            net_param = self._read_net(p.net, "net file")
        net = self._build_net(net_param, caffe_pb2.TRAIN, p.train_state)
        if not net._loss_layers:
            python = [layer.layer_param.name for layer in net.layers if layer.type == "Python"]
            LOG.warning(
                "The train net '%s' has no loss: no top carries a loss_weight, so training "
                "changes nothing. Caffe's loss layers weigh their top by 1 by themselves; a "
                "Python loss layer needs loss_weight: 1 on its top%s", net.name,
                f" (Python layers: {python})" if python else "")
        return net

    def _init_test_nets(self) -> list[Net]:
        p = self._param
        specs: list[tuple[str, caffe_pb2.NetParameter]] = []
        for net_param in p.test_net_param:
            specs.append(("test_net_param", net_param))
        for path in p.test_net:
            specs.append((f"test_net file: {path}", self._read_net(path, "test_net file")))
        remaining = len(p.test_iter) - len(specs)
        if remaining > 0 and p.HasField("net_param"):
            specs += [("net_param", p.net_param)] * remaining
        elif remaining > 0:
            generic = self._read_net(p.net, "net file")
            specs += [(f"net file: {p.net}", generic)] * remaining
        nets = []
        for i, (source, net_param) in enumerate(specs):
            LOG.info("Creating test net (#%d) specified by %s", i, source)
            copy = caffe_pb2.NetParameter()
            copy.CopyFrom(net_param)
            net = self._build_net(copy, caffe_pb2.TEST, p.test_state[i] if p.test_state else None)
            net.debug_info = bool(p.debug_info)
            net.share_with(self.net)
            nets.append(net)
        return nets

    def _pre_solve(self) -> None:
        """Allocate the update rule's state (subclasses)."""

    # ------------------------------------------------------------------ pycaffe API
    def add_callback(self, on_start, on_gradients_ready=None) -> None:
        """Call ``on_start()`` at the start of every iteration and ``on_gradients_ready()`` after
        the backward passes, before the update. An object with ``on_start`` /
        ``on_gradients_ready`` methods may be given instead.

        ``on_gradients_ready`` may read any blob's diff, as in Caffe: while one is registered,
        ``step`` keeps intermediate diffs (unless it says ``param_diffs_only = True``, as
        ``caffe.NCCL`` does; see ``Net.after_backward``)."""
        if on_gradients_ready is None and hasattr(on_start, "on_gradients_ready"):
            on_start, on_gradients_ready = on_start.on_start, on_start.on_gradients_ready
        self._callbacks.append((on_start, on_gradients_ready))

    def _callbacks_read_diffs(self) -> bool:
        """Whether an ``on_gradients_ready`` callback may read intermediate blob diffs."""
        return any(ready is not None and not getattr(getattr(ready, "__self__", ready),
                                                     "param_diffs_only", False)
                   for _, ready in self._callbacks)

    def set_action_function(self, fn: Callable[[], SolverAction] | None) -> None:
        """``fn()`` is polled after every iteration and test batch; it returns a SolverAction
        (the ``caffe train`` command turns SIGINT / SIGHUP into actions this way)."""
        self._action_function = fn

    def _requested_action(self) -> SolverAction:
        if self._action_function is None:
            return SolverAction.NONE
        return SolverAction(self._action_function() or 0)

    def share_weights(self, net: Net) -> None:
        """Make ``net`` use the train net's parameters (layers matched by name)."""
        net.share_with(self.net)

    def apply_update(self) -> None:
        """Turn the accumulated parameter diffs into an update and apply it."""
        raise NotImplementedError(f"{type(self).__name__} defines no update rule")

    def step(self, iters: int) -> None:
        """Run ``iters`` training iterations (Caffe's Solver::Step).

        Unless ``keep_blob_diffs`` is set or an ``on_gradients_ready`` callback may read them,
        each backward frees the diffs of intermediate blobs as soon as no later layer needs them
        (``Net.forward_backward(release_diffs=True)``): after a step those diffs read as zeros,
        while parameter diffs and blob data stay."""
        p = self._param
        stop_iter = self.iter + int(iters)
        start_iter = self.iter
        self._losses = []
        self.smoothed_loss = 0.0
        timer_start = time.perf_counter()
        iter_last = self.iter
        root = root_solver()
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if (p.test_interval and self.iter % p.test_interval == 0
                    and (self.iter > 0 or p.test_initialization)):
                if root:
                    self.test_all()
                if self.requested_early_exit:
                    break
            for on_start, _ in self._callbacks:
                if on_start is not None:
                    on_start()
            display = bool(p.display) and self.iter % p.display == 0
            self.net.debug_info = display and p.debug_info
            loss = 0.0
            release = not (self.keep_blob_diffs or self._callbacks_read_diffs())
            for _ in range(p.iter_size):
                loss = loss + self.net._forward_backward_tensor(release_diffs=release)
            # reading the loss waits for the device: unless the log or a callback needs it
            # now, do it once the update is queued too
            read_now = display or bool(self._callbacks)
            if read_now:
                self._update_smoothed_loss(float(loss) / p.iter_size, start_iter)
            if display and root:
                lapse = time.perf_counter() - timer_start
                speed = (self.iter - iter_last) / (lapse or 1.0)
                LOG.info("Iteration %d (%g iter/s, %gs/%d iters), loss = %g", self.iter, speed,
                         lapse, p.display, self.smoothed_loss)
                timer_start = time.perf_counter()
                iter_last = self.iter
                self._log_outputs(self.net, "Train", None)
            for _, on_gradients_ready in self._callbacks:
                if on_gradients_ready is not None:
                    on_gradients_ready()
            self.apply_update()
            if not read_now:
                self._update_smoothed_loss(float(loss) / p.iter_size, start_iter)
            self.iter += 1
            request = self._requested_action()
            if root and ((p.snapshot and self.iter % p.snapshot == 0)
                         or request & SolverAction.SNAPSHOT):
                self.snapshot()
            if request & SolverAction.STOP:
                self.requested_early_exit = True
                break

    def solve(self, resume_file: str | None = None, exact: bool = False) -> None:
        """Train until ``max_iter`` (Caffe's Solver::Solve), optionally resuming from a
        ``.solverstate`` (or ``.solverstate.h5``) file first (``exact``: see ``restore``)."""
        p = self._param
        LOG.info("Solving %s", self.net.name)
        LOG.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        if resume_file:
            LOG.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file, exact)
        start_iter = self.iter
        # a snapshot this solve() already wrote at its last iteration (an action asking for
        # a snapshot and a stop) is not written twice; one written before this call is written
        # again, as the weights may have changed since
        self._last_snapshot_iter = None
        self.step(p.max_iter - self.iter)
        if not root_solver():  # the other ranks of a data-parallel run only train
            return
        if (p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0)
                and self._last_snapshot_iter != self.iter):
            self.snapshot()
        if self.requested_early_exit:
            LOG.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            loss = self.net._forward()
            self._update_smoothed_loss(loss, start_iter)
            LOG.info("Iteration %d, loss = %g", self.iter, self.smoothed_loss)
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        LOG.info("Optimization Done.")

    def _update_smoothed_loss(self, loss: float, start_iter: int) -> None:
        average = self._param.average_loss
        if len(self._losses) < average:
            self._losses.append(loss)
            n = len(self._losses)
            self.smoothed_loss = (self.smoothed_loss * (n - 1) + loss) / n
        else:
            idx = (self.iter - start_iter) % average
            self.smoothed_loss += (loss - self._losses[idx]) / average
            self._losses[idx] = loss

    # ------------------------------------------------------------------ testing
    def test_all(self) -> None:
        """Run every test net for its ``test_iter`` batches and log the mean outputs."""
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)

    def test(self, test_net_id: int = 0) -> list[float]:
        """Run test net ``test_net_id``; returns (and logs) the mean of every output value."""
        p = self._param
        LOG.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        net = self.test_nets[test_net_id]
        net.share_with(self.net)
        n_iter = p.test_iter[test_net_id]
        total: torch.Tensor | None = None
        loss = 0.0
        for _ in range(n_iter):
            request = self._requested_action()
            while request != SolverAction.NONE:
                if request & SolverAction.SNAPSHOT:
                    self.snapshot()
                if request & SolverAction.STOP:
                    self.requested_early_exit = True
                request = self._requested_action()
            if self.requested_early_exit:
                LOG.info("Test interrupted.")
                return []
            iter_loss = net._forward()
            if p.test_compute_loss:
                loss += iter_loss
            values = _output_values(net)
            total = values if total is None else total + values
        if p.test_compute_loss:
            LOG.info("Test loss: %g", loss / n_iter if n_iter else float("nan"))
        means = [] if total is None else (total / n_iter).tolist()
        self.mean_scores[test_net_id] = means
        if total is not None:
            self._log_outputs(net, "Test", means)
        return means

    @staticmethod
    def _log_outputs(net: Net, kind: str, values: list[float] | None) -> None:
        """``<kind> net output #k: name = value (* weight = weighted loss)`` for every value of
        every output blob (the current data when ``values`` is None)."""
        if values is None:
            values = _output_values(net).tolist()
        weights = net.blob_loss_weights
        k = 0
        for name in net.outputs:
            w = weights[name]
            for _ in range(net.blobs[name].count):
                v = values[k]
                extra = f" (* {w:g} = {w * v:g} loss)" if w else ""
                LOG.info("    %s net output #%d: %s = %g%s", kind, k, name, v, extra)
                k += 1

    # ------------------------------------------------------------------ snapshots
    def snapshot_filename(self, extension: str) -> str:
        return f"{self._param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self) -> str:
        """Write the weights and the solver state for the current iteration; returns the
        weights file name."""
        p = self._param
        hdf5 = p.snapshot_format == caffe_pb2.SolverParameter.HDF5
        model = self.snapshot_filename(".caffemodel.h5" if hdf5 else ".caffemodel")
        folder = os.path.dirname(model)
        try:
            if folder:
                os.makedirs(folder, exist_ok=True)
            if hdf5:
                LOG.info("Snapshotting to HDF5 file %s", model)
                model_io.save_hdf5(self.net, model, p.snapshot_diff)
            else:
                LOG.info("Snapshotting to binary proto file %s", model)
                files.write_binary(model, model_io.net_to_proto(self.net, p.snapshot_diff))
            self._snapshot_solver_state(model)
        except OSError as e:
            raise SolverFileError(f"{self._source}: cannot write the snapshot '{model}': "
                                  f"{e}") from None
        self._last_snapshot_iter = self.iter
        self.snapshots.append(model)
        return model

    def _snapshot_solver_state(self, model_filename: str) -> None:
        raise NotImplementedError

    def restore(self, state_file: str, exact: bool = False) -> None:
        """Resume from a ``.solverstate`` (binary proto) or ``.solverstate.h5`` file: the
        iteration, the lr policy step, the update history and the learned weights it names.

        As in Caffe, the data layers then start again at their first batch and the random
        generators where the solver's ``random_seed`` put them. With ``exact=True``, the
        random and data-layer state saved with the snapshot is restored too, so training on
        repeats an uninterrupted run (see :mod:`caffe.solvers.resume`)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<caffe.{type(self).__name__} '{self.net.name}' iter {self.iter}>"


def _output_values(net: Net) -> torch.Tensor:
    """Every value of every output blob, flattened into one float64 tensor."""
    parts = [net.blobs[name].tensor.detach().reshape(-1).double() for name in net.outputs]
    if not parts:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat(parts)
