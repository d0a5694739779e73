"""Data-parallel training across processes: pycaffe's ``caffe.NCCL``, on torch.distributed.

Each process runs one solver on its own device (``caffe.set_solver_count(n)``,
``caffe.set_solver_rank(r)``, then the solver), and its data layers read their own share of the
records (a rank keeps every n-th one, as Caffe's). ``NCCL(solver, uid)`` joins the processes:

- ``bcast()`` gives every rank the weights of rank 0;
- as a solver callback (``solver.add_callback(nccl)``) it averages the parameter diffs over the
  ranks before each update: the sum over the ranks times ``1/n``, Caffe's numbers;
- as a net callback (``solver.net.after_backward(nccl)``, what Caffe does when the solver's
  ``layer_wise_reduce`` is true, its default) it averages each layer's diffs as soon as its
  backward is done, so the reduction of one layer overlaps the backward of the next on a GPU.
  Diffs it has not averaged by the end of the backward are averaged then, so a script that
  registers only the solver callback still trains correctly.

After the same averaged diffs, every rank applies the same update, so the weights stay equal
without being sent again. Only rank 0 tests, snapshots and logs the training loss.

``uid`` is a torch.distributed init method (bytes or str). ``NCCL.new_uid()`` makes a
``file://`` rendezvous for processes on one machine (pycaffe's ``python/train.py`` pattern);
``tcp://host:port`` or ``env://`` (torchrun's variables) reach other machines. The backend is
NCCL for CUDA nets and Gloo on the CPU; a process group the program has already initialised is
used as it is. A rank waits for the others at most torch's default time (or
``NEOCAFFE_DIST_TIMEOUT`` seconds). ``caffe train -gpu 0,1,...`` starts one such process per
GPU (``spawn_ranks``).
"""

from __future__ import annotations

import datetime
import os
import secrets
import tempfile
from collections.abc import Callable

import torch

from caffe._common import (
    LOG,
    STATE,
    init_log,
    set_solver_count,
    set_solver_rank,
    solver_count,
    solver_rank,
)
from caffe.blob import Blob
from caffe.errors import CaffeError
from caffe.solvers.solver import SolverAction


def has_nccl() -> bool:
    """Whether ``caffe.NCCL`` can join processes (pycaffe's ``has_nccl``): torch.distributed
    is built in."""
    import torch.distributed as dist

    return dist.is_available()


def _join(uid: str, count: int, rank: int) -> None:
    """Join (as the default process group) the ``count`` ranks that meet through ``uid``, or
    check the group the program has initialised."""
    import torch.distributed as dist

    if not dist.is_available():
        raise CaffeError("caffe.NCCL needs torch.distributed, which this torch build lacks; "
                         "train with one solver (solver_count 1)")
    if dist.is_initialized():
        if (dist.get_world_size(), dist.get_rank()) != (count, rank):
            raise CaffeError(
                f"caffe.NCCL: the process group already initialised has {dist.get_world_size()} "
                f"ranks and this is rank {dist.get_rank()}, but caffe.solver_count() is {count} "
                f"and caffe.solver_rank() is {rank}; call caffe.set_solver_count and "
                "caffe.set_solver_rank with the group's numbers")
        return
    backend = "gloo"
    if STATE.device.type == "cuda":
        backend = "nccl"
        torch.cuda.set_device(STATE.device)
    kwargs = {}
    timeout = os.environ.get("NEOCAFFE_DIST_TIMEOUT", "")
    if timeout:
        try:
            kwargs["timeout"] = datetime.timedelta(seconds=float(timeout))
        except ValueError:
            raise CaffeError(f"NEOCAFFE_DIST_TIMEOUT must be a number of seconds, got "
                             f"'{timeout}'") from None
    dist.init_process_group(backend, init_method=uid or "env://", world_size=count, rank=rank,
                            **kwargs)


class NCCL:
    """Keeps the solvers of ``caffe.solver_count()`` processes in step (see the module text).

    ``NCCL(solver, uid)`` in every process, with the same ``uid`` from ``NCCL.new_uid()``."""

    # as a net callback it reads parameter diffs only: the backward still frees intermediate
    # diffs and folds BatchNorm + Scale (Net.after_backward)
    param_diffs_only = True

    def __init__(self, solver, uid: bytes | str = "") -> None:
        count, rank = solver_count(), solver_rank()
        if count < 1 or not 0 <= rank < count:
            raise CaffeError(f"caffe.NCCL: solver rank {rank} is not in 0..{count - 1} "
                             "(caffe.set_solver_count / caffe.set_solver_rank)")
        self.count = count
        if count > 1:
            _join(uid.decode() if isinstance(uid, bytes) else str(uid), count, rank)
        elif os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
            LOG.warning("caffe.NCCL: WORLD_SIZE is %s but caffe.solver_count() is 1, so this "
                        "process trains alone; call caffe.set_solver_count(WORLD_SIZE) and "
                        "caffe.set_solver_rank(RANK) before creating the solver",
                        os.environ["WORLD_SIZE"])
        net = solver.net
        self._params: list[Blob] = list(net.learnable_params)
        ids = net._learnable_param_ids
        # per layer, the learnable parameters its backward writes to (shared ones included)
        self._layer_params = [
            sorted({ids[pid] for pid in net._param_id_vecs[li]})
            if net._layer_need_backward[li] else []
            for li in range(len(net.layers))]
        self._pending = sorted({k for ks in self._layer_params for k in ks})
        self._reduced = [False] * len(self._params)
        self._local_action: Callable[[], SolverAction] | None = None
        self._agreed = SolverAction.NONE

    @staticmethod
    def new_uid() -> bytes:
        """A fresh rendezvous for processes on this machine: a ``file://`` init method, as
        bytes (pycaffe's uid is bytes; ``NCCL`` takes bytes or str)."""
        name = f"neocaffe-nccl-{os.getpid()}-{secrets.token_hex(8)}"
        return ("file://" + os.path.join(tempfile.gettempdir(), name)).encode()

    def _group_op(self, tensors: list[torch.Tensor], op: Callable[[torch.Tensor], None],
                  extra: list[float] | None = None) -> list[float]:
        """Run ``op`` on one flat copy of ``tensors`` (and the numbers ``extra`` after them),
        copy the result back, and return what became of ``extra``."""
        extra = extra or []
        parts = [t.reshape(-1) for t in tensors]
        if extra:
            device = tensors[0].device if tensors else STATE.device
            parts.append(torch.tensor(extra, dtype=torch.float32, device=device))
        flat = torch.cat(parts)
        op(flat)
        sizes = [t.numel() for t in tensors]
        for t, part in zip(tensors, flat[:sum(sizes)].split(sizes)):
            t.copy_(part.view_as(t))
        return flat[sum(sizes):].tolist()

    def bcast(self) -> None:
        """Give every rank the parameter values of rank 0."""
        if self.count == 1 or not self._params:
            return
        import torch.distributed as dist

        self._group_op([p.tensor for p in self._params], lambda flat: dist.broadcast(flat, 0))

    def _average(self, indices: list[int], extra: list[float] | None = None) -> list[float]:
        """Replace the diffs of learnable parameters ``indices`` by their mean over the ranks
        (and sum the numbers ``extra`` over the ranks)."""
        for k in indices:
            self._reduced[k] = True
        if self.count == 1 or not (indices or extra):
            return extra or []
        import torch.distributed as dist

        scale = 1.0 / self.count
        n = sum(self._params[k].count for k in indices)

        def mean(flat: torch.Tensor) -> None:
            dist.all_reduce(flat)
            flat[:n].mul_(scale)

        return self._group_op([self._params[k].diff_tensor for k in indices], mean, extra)

    # ---------------------------------------------------------------- callbacks
    def on_start(self) -> None:
        """Solver callback, start of an iteration."""
        self._reduced = [False] * len(self._params)

    def __call__(self, layer: int) -> None:
        """Net ``after_backward`` callback: average the diffs of ``layer``'s parameters."""
        self._average(self._layer_params[layer])

    def on_gradients_ready(self) -> None:
        """Solver callback, after the backward passes: average the diffs not yet averaged, and
        combine the ranks' action requests when ``action_function`` is in use."""
        left = [k for k in self._pending if not self._reduced[k]]
        if self._local_action is None:
            self._average(left)
            return
        request = SolverAction(self._local_action() or 0)
        stops, snapshots = self._average(left, [float(bool(request & SolverAction.STOP)),
                                                float(bool(request & SolverAction.SNAPSHOT))])
        self._agreed = ((SolverAction.STOP if stops else SolverAction.NONE)
                        | (SolverAction.SNAPSHOT if snapshots else SolverAction.NONE))

    def action_function(self, local: Callable[[], SolverAction]) -> Callable[[], SolverAction]:
        """Make ``local`` (a solver action function, e.g. ``caffe train``'s signal handlers)
        safe for all ranks: give ``solver.set_action_function`` what this returns. Every rank
        polls ``local`` in ``on_gradients_ready``; the requests are combined over the ranks
        (any STOP stops every rank after the same iteration, any SNAPSHOT has rank 0 take
        one) and handed to the solver when it asks after the update. A request made while
        rank 0 tests waits for the next iteration."""
        self._local_action = local

        def agreed() -> SolverAction:
            action, self._agreed = self._agreed, SolverAction.NONE
            return action

        return agreed


def leave() -> None:
    """Leave the process group ``NCCL`` joined (if any), as each rank must before it exits."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _rank_main(rank: int, count: int, uid: str, fn: Callable, args: tuple) -> None:
    set_solver_count(count)
    set_solver_rank(rank)
    init_log()
    try:
        fn(rank, uid, *args)
    finally:
        leave()


def spawn_ranks(fn: Callable, count: int, *args) -> None:
    """Run ``fn(rank, uid, *args)`` in ``count`` new processes with solver count and rank set
    (``fn`` must be importable by name). Raises CaffeError naming the rank that failed."""
    import torch.multiprocessing as mp

    uid = NCCL.new_uid()
    try:
        mp.spawn(_rank_main, args=(count, uid, fn, args), nprocs=count, join=True)
    except mp.ProcessRaisedException as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise CaffeError(f"solver rank {e.error_index} failed: {lines[-1]}\n(its traceback:)\n"
                         + "\n".join(lines[1:-1])) from None
    except mp.ProcessExitedException as e:
        raise CaffeError(f"solver rank {e.error_index} exited with code {e.exit_code}"
                         ) from None
    finally:
        path = uid[len("file://"):]
        if os.path.exists(path):
            os.unlink(path)
