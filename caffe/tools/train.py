"""``caffe train``: train a net with a solver (Caffe's ``caffe train``).

``caffe train -solver S [-weights a.caffemodel,b.caffemodel | -snapshot S.solverstate
[-exact_resume]] [-gpu ids|all] [-level N] [-stage s1,s2] [-sigint_effect stop|snapshot|none]
[-sighup_effect stop|snapshot|none]``

As in Caffe, paths inside the solver file are relative to the working directory, ``-level`` and
``-stage`` go into the solver's ``train_state``, and without ``-gpu`` a solver file that says
``solver_mode: GPU`` trains on its ``device_id``. SIGINT stops training (after a last snapshot,
unless ``snapshot_after_train: false``); SIGHUP takes a snapshot and training goes on. With
several GPU ids it trains data-parallel, one solver process per GPU (``caffe.parallel``): every
process reads its own share of the data, the diffs are averaged before each update, rank 0
tests and snapshots, and a signal stops all of them after the same iteration. Started by
torchrun (``torchrun --nnodes N --nproc-per-node G -m caffe train -solver S -gpu all``), each
process is one rank of the whole run instead, on GPU number LOCAL_RANK of its ``-gpu`` list
(the CPU without ``-gpu``), so training spans machines.

neocaffe conveniences: ``-exact_resume`` also restores the data positions and random state
saved with the snapshot (Caffe starts the data again at the first batch); the solver file's
folder is put on ``sys.path``, so a Python layer module kept next to the solver is found without
setting PYTHONPATH; ``-sigint_effect snapshot`` takes a snapshot and then stops (Ctrl-C always
ends the run unless its effect is ``none``); a missing snapshot folder is created; a progress
bar is drawn when stderr is a terminal; and the snapshot files written are listed on stdout at
the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import torch

from caffe._common import (
    LOG,
    PRECISIONS,
    init_log,
    root_solver,
    set_device,
    set_mode_cpu,
    set_mode_gpu,
    set_precision,
    set_solver_count,
    set_solver_rank,
    solver_count,
)
from caffe.errors import CaffeError, SolverError
from caffe.net import Net
from caffe.parallel import NCCL, leave, spawn_ranks
from caffe.proto import caffe_pb2
from caffe.solvers import Solver, SolverAction, solver_class
from caffe.solvers.solver import read_solver_param

COMMAND = "train"
HELP = "train or fine-tune a model with a solver"

EFFECTS = ("stop", "snapshot", "none")


# ---------------------------------------------------------------------------- shared flags
def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``-gpu``, ``-level``, ``-stage`` and ``-no_python_layers``, shared by train, test and
    time."""
    parser.add_argument("--gpu", default="",
                        help="GPU ids to use, comma-separated, or 'all' (default: CPU)")
    parser.add_argument("--level", type=int, default=0, help="net state level")
    parser.add_argument("--stage", default="", help="net state stages, comma-separated")
    parser.add_argument("--no-python-layers", "--no_python_layers", action="store_true",
                        help="refuse nets with Python layers (for untrusted models)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="arithmetic of convolutions and matrix products on the GPU "
                             "(default float32, Caffe's numbers; see caffe.set_precision)")


def stages_from(text: str) -> list[str]:
    return [s for s in text.split(",") if s]


def gpu_ids(text: str) -> list[int]:
    """Caffe's -gpu flag: '' (CPU), 'all' or a comma list of device ids."""
    if not text:
        return []
    if text == "all":
        count = torch.cuda.device_count()
        if not count:
            LOG.warning("-gpu all: PyTorch sees no CUDA device; running on the CPU")
        return list(range(count))
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CaffeError(f"-gpu takes 'all' or comma-separated device ids, got '{text}'") from None


def use_devices(gpus: list[int], precision: str = "float32") -> None:
    """Select the CPU (no ids) or the first GPU id, and the arithmetic precision. (``caffe
    train`` runs one process per id; ``test`` and ``time`` use the first.)"""
    set_precision(precision)
    if not gpus:
        LOG.info("Use CPU.")
        set_mode_cpu()
        return
    if len(gpus) > 1:
        LOG.warning("Several GPUs (%s) were asked for; this command runs on GPU %d",
                    ",".join(map(str, gpus)), gpus[0])
    LOG.info("Use GPU with device ID %d", gpus[0])
    set_device(gpus[0])
    set_mode_gpu()


def add_import_path(model_file: str) -> None:
    """Put the folder of ``model_file`` first on sys.path (for Python layer modules)."""
    folder = os.path.dirname(os.path.abspath(model_file))
    if folder not in sys.path:
        sys.path.insert(0, folder)


def net_from_args(args: argparse.Namespace, command: str, verb: str, phase: int,
                  weights: str = "") -> Net:
    """The net that the command line of ``caffe test`` / ``caffe time`` names: checks -model
    and -iterations, selects the device and precision, and builds it."""
    if not args.model:
        raise CaffeError(f"Need a model definition to {verb}: caffe {command} -model "
                         "net.prototxt")
    if args.iterations <= 0:
        raise CaffeError(f"-iterations must be positive, got {args.iterations}")
    use_devices(gpu_ids(args.gpu), args.precision)
    add_import_path(args.model)
    return Net(args.model, phase, level=args.level, stages=stages_from(args.stage),
               weights=weights or None, allow_python_layers=not args.no_python_layers)


# ---------------------------------------------------------------------------- signals
class SignalActions:
    """Turns SIGINT / SIGHUP into solver actions, polled by the solver after each iteration."""

    def __init__(self, sigint_effect: str, sighup_effect: str) -> None:
        self.pending = SolverAction.NONE
        self._previous: dict[int, object] = {}
        # as Caffe: "snapshot" snapshots and training goes on, "stop" ends it (a stopped
        # run snapshots on its way out unless snapshot_after_train is false)
        effects = {"stop": SolverAction.STOP, "snapshot": SolverAction.SNAPSHOT,
                   "none": SolverAction.NONE}
        plans = [(signal.SIGINT, sigint_effect)]
        if hasattr(signal, "SIGHUP"):
            plans.append((signal.SIGHUP, sighup_effect))
        for signum, effect in plans:
            self._previous[signum] = signal.signal(signum, self._handler(signum, effects[effect]))

    def _handler(self, signum: int, action: SolverAction):
        def handle(_signum, _frame) -> None:
            if action:
                LOG.info("Received %s: %s requested", signal.Signals(signum).name,
                         action.name or str(action))
            self.pending |= action

        return handle

    def __call__(self) -> SolverAction:
        action, self.pending = self.pending, SolverAction.NONE
        return action

    def close(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


# ---------------------------------------------------------------------------- progress bar
class ProgressBar:
    """A one-line progress bar on a terminal; log lines clear it before they print."""

    # a solver callback that reads no diff: the step still frees intermediate ones
    param_diffs_only = True

    def __init__(self, solver: Solver, stream=None) -> None:
        self.solver = solver
        self.stream = stream or sys.stderr
        self.start_iter = solver.iter
        self.start = time.perf_counter()
        self.last_draw = 0.0
        self.shown = False
        self._handlers = list(LOG.handlers)
        for h in self._handlers:
            h.addFilter(self._clear)
        solver.add_callback(None, self.update)

    def _clear(self, _record) -> bool:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False
        return True

    def update(self) -> None:
        now = time.perf_counter()
        if now - self.last_draw < 0.1:
            return
        self.last_draw = now
        s = self.solver
        total = max(s.param.max_iter, 1)
        done = min(s.iter + 1, total)
        speed = (done - self.start_iter) / max(now - self.start, 1e-9)
        eta = (total - done) / speed if speed > 0 else 0.0
        width = 30
        filled = int(width * done / total)
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r[{bar}] {done}/{total} loss {s.smoothed_loss:.4g} "
                          f"{speed:.1f} it/s ETA {int(eta) // 60}:{int(eta) % 60:02d}\033[K")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        self._clear(None)
        for h in self._handlers:
            h.removeFilter(self._clear)


# ---------------------------------------------------------------------------- the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--solver", default="", help="the solver definition (prototxt)")
    parser.add_argument("--weights", default="",
                        help="weights to fine-tune from, comma-separated caffemodel/HDF5 files")
    parser.add_argument("--snapshot", default="",
                        help="a .solverstate (or .solverstate.h5) to resume training from")
    parser.add_argument("--exact_resume", action="store_true",
                        help="with -snapshot: also restore the data layers' positions and the "
                        "random generators saved with it, so training repeats an "
                        "uninterrupted run (Caffe starts the data again at the first batch)")
    add_device_arguments(parser)
    parser.add_argument("--sigint_effect", choices=EFFECTS, default="stop",
                        help="what SIGINT (Ctrl-C) does: stop (default), snapshot (training "
                        "goes on), none")
    parser.add_argument("--sighup_effect", choices=EFFECTS, default="snapshot",
                        help="what SIGHUP does: snapshot (default, training goes on), stop, none")
    parser.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                        help="draw a progress bar (auto: when stderr is a terminal)")
    parser.add_argument("--cuda-graph", "--cuda_graph", action="store_true",
                        help="replay each training pass as a CUDA graph (GPU, fixed shapes; "
                             "see Net.use_cuda_graph)")


def _train_devices(args: argparse.Namespace, param: caffe_pb2.SolverParameter) -> list[int]:
    if args.gpu or not (param.HasField("solver_mode")
                        and param.solver_mode == caffe_pb2.SolverParameter.GPU):
        return gpu_ids(args.gpu)
    if not torch.cuda.is_available():
        LOG.warning("The solver asks for solver_mode: GPU, but PyTorch sees no CUDA device; "
                    "training on the CPU")
        return []
    return [param.device_id]


def run(args: argparse.Namespace) -> int:
    init_log()
    if not args.solver:
        raise SolverError("Need a solver definition to train: caffe train -solver "
                          "solver.prototxt")
    if args.snapshot and args.weights:
        raise SolverError("Give a snapshot to resume training or weights to fine-tune, but "
                          "not both")
    if args.exact_resume and not args.snapshot:
        raise SolverError("-exact_resume resumes a snapshot: give it with -snapshot "
                          "S.solverstate")
    gpus = _train_devices(args, read_solver_param(args.solver))
    launched = launched_ranks()
    if launched is not None:  # one of torchrun's processes: a rank of its own
        count, rank, local = launched
        LOG.info("Solver rank %d of %d (torchrun)", rank, count)
        set_solver_count(count)
        set_solver_rank(rank)
        try:
            return _train_on(gpus[local % len(gpus)] if gpus else None, args, "env://")
        finally:
            leave()
    if len(gpus) > 1:
        LOG.info("Training on GPUs %s: one solver process per GPU",
                 ",".join(map(str, gpus)))
        # Ctrl-C reaches every solver process, which stop together (NCCL.action_function)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            spawn_ranks(train_rank, len(gpus), args, gpus)
        finally:
            signal.signal(signal.SIGINT, previous)
        LOG.info("Optimization Done.")
        return 0
    use_devices(gpus, args.precision)
    return _train(args)


def launched_ranks() -> tuple[int, int, int] | None:
    """(world size, rank, local rank) when torchrun (or another torch.distributed launcher)
    started this process as one of several, else None."""
    env = os.environ
    try:
        count = int(env.get("WORLD_SIZE", "1"))
        if count <= 1 or "RANK" not in env:
            return None
        return count, int(env["RANK"]), int(env.get("LOCAL_RANK", env["RANK"]))
    except ValueError:
        raise CaffeError("WORLD_SIZE, RANK and LOCAL_RANK must be integers, got "
                         f"{env.get('WORLD_SIZE')!r}, {env.get('RANK')!r} and "
                         f"{env.get('LOCAL_RANK')!r}") from None


def train_rank(rank: int, uid: str, args: argparse.Namespace, devices: list[int | None]) -> None:
    """One solver process of a data-parallel ``caffe train`` (``caffe.parallel.spawn_ranks``):
    rank ``rank`` trains on GPU ``devices[rank]`` (the CPU for None)."""
    _train_on(devices[rank], args, uid)


def _train_on(device: int | None, args: argparse.Namespace, uid: str) -> int:
    """This process's rank of a data-parallel run: train on GPU ``device`` (the CPU for
    None), joined to the other ranks through ``uid``."""
    use_devices([] if device is None else [device], args.precision)
    return _train(args, uid)


def _train(args: argparse.Namespace, uid: str = "") -> int:
    """Build the solver that ``args`` describe on the current device and train; joined to
    the other solver ranks through ``uid`` when ``caffe.solver_count()`` > 1."""
    param = read_solver_param(args.solver)
    param.train_state.level = args.level
    param.train_state.stage.extend(stages_from(args.stage))
    if args.snapshot or args.weights:
        param.ClearField("weights")
    if args.weights:
        param.weights.append(args.weights)
    add_import_path(args.solver)
    solver = solver_class(param.type, args.solver)(
        param, args.solver, allow_python_layers=not args.no_python_layers)
    if args.cuda_graph:
        solver.net.use_cuda_graph()
    if args.snapshot:
        LOG.info("Resuming from %s", args.snapshot)
        solver.restore(args.snapshot, exact=args.exact_resume)
    actions = SignalActions(args.sigint_effect, args.sighup_effect)
    if solver_count() > 1:
        nccl = NCCL(solver, uid)
        nccl.bcast()
        solver.add_callback(nccl)
        if param.layer_wise_reduce:
            solver.net.after_backward(nccl)
        solver.set_action_function(nccl.action_function(actions))
    else:
        solver.set_action_function(actions)
    root = root_solver()
    show = root and (args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty()))
    bar = ProgressBar(solver) if show else None
    try:
        LOG.info("Starting Optimization")
        solver.solve()
    finally:
        actions.close()
        if bar is not None:
            bar.close()
    if not root:
        return 0
    LOG.info("Optimization Done.")
    if solver.snapshots:
        latest = solver.snapshots[-1]
        print(f"Snapshots ({len(solver.snapshots)}) are in "
              f"{os.path.dirname(latest) or '.'}; latest weights: {latest}")
    return 0
