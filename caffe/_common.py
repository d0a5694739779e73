"""Process-wide state shared by every module: compute mode, device, random generator, logging.

This mirrors Caffe's ``Caffe`` singleton (``set_mode_cpu``, ``set_mode_gpu``, ``set_device``,
``set_random_seed``) and its glog-style log lines.
"""

from __future__ import annotations

import logging
import os
import sys

import torch

_log = logging.getLogger("caffe")
#: torch.compiler.is_compiling (torch >= 2.3); nothing traces this code on older releases
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)


class _State:
    """Mutable global state. ``generation`` changes whenever the device changes, so nets can
    notice a mode switch with one integer comparison."""

    device: torch.device = torch.device("cpu")
    device_id: int = 0
    generation: int = 0
    seed: int | None = None
    generator: torch.Generator = torch.Generator()
    solver_count: int = 1
    solver_rank: int = 0
    precision: str = "float32"


STATE = _State()


def set_mode_cpu() -> None:
    """Run every net on the CPU (Caffe's ``Caffe::set_mode(CPU)``)."""
    if STATE.device.type != "cpu":
        STATE.device = torch.device("cpu")
        STATE.generation += 1


def set_mode_gpu() -> None:
    """Run every net on the current CUDA device (``set_device`` picks which)."""
    if not torch.cuda.is_available():
        from caffe.errors import CaffeError

        raise CaffeError(
            "set_mode_gpu: no CUDA device is available to PyTorch "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
            "use caffe.set_mode_cpu() or install a CUDA build of torch"
        )
    dev = torch.device("cuda", STATE.device_id)
    if STATE.device != dev:
        STATE.device = dev
        STATE.generation += 1


def set_device(device_id: int) -> None:
    """Choose the CUDA device used in GPU mode."""
    STATE.device_id = int(device_id)
    if STATE.device.type == "cuda":
        STATE.device = torch.device("cuda", STATE.device_id)
        STATE.generation += 1


def set_random_seed(seed: int) -> None:
    """Seed every random choice (fillers, Dropout, data shuffling) for reproducible runs."""
    STATE.seed = int(seed)
    STATE.generator.manual_seed(int(seed))
    torch.manual_seed(int(seed))


def get_rng_state() -> dict[str, bytes]:
    """The state of every generator ``set_random_seed`` seeds: ``caffe`` (the CPU generator
    of fillers, Dropout and shuffles), ``torch`` (torch's default CPU generator) and, when the
    nets run on CUDA, ``cuda`` (that device's default generator)."""
    state = {"caffe": STATE.generator.get_state().numpy().tobytes(),
             "torch": torch.get_rng_state().numpy().tobytes()}
    if STATE.device.type == "cuda" and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(STATE.device).numpy().tobytes()
    return state


def set_rng_state(state: dict[str, bytes]) -> None:
    """Restore what ``get_rng_state`` returned. A ``cuda`` state is restored only in GPU mode
    (and a missing one leaves the CUDA generator alone). Raises ValueError for states of the
    wrong size."""
    current = get_rng_state()
    for key, value in state.items():
        if key not in ("caffe", "torch", "cuda"):
            raise ValueError(f"unknown random generator '{key}'")
        if key in current and len(value) != len(current[key]):
            raise ValueError(f"the state of the '{key}' random generator has {len(value)} "
                             f"bytes; this torch build uses {len(current[key])}")
    tensors = {k: torch.frombuffer(bytearray(v), dtype=torch.uint8) for k, v in state.items()
               if k in current}
    if "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"], STATE.device)
    if "torch" in tensors:
        torch.set_rng_state(tensors["torch"])
    if "caffe" in tensors:
        STATE.generator.set_state(tensors["caffe"])


def generator_for(device: torch.device) -> torch.Generator | None:
    """The seeded generator for ``device`` (None on CUDA: the CUDA default generator is seeded
    by ``set_random_seed`` through ``torch.manual_seed``)."""
    return STATE.generator if device.type == "cpu" else None


PRECISIONS = ("float32", "tf32", "bf16")


def set_precision(precision: str) -> None:
    """Choose the arithmetic of convolutions and matrix products.

    ``"float32"`` (the default): IEEE float32 everywhere, Caffe's numbers; PyTorch's TF32
    shortcut for cuDNN convolutions is switched off (PyTorch enables it by default).
    ``"tf32"``: convolutions and matrix products on CUDA use TensorFloat-32 (10-bit mantissa
    inputs, float32 accumulation), several times faster on Ampere and later cards; results
    move by about 1e-3 relative, beyond the conformance tolerance (1e-4). The fused RNN and
    LSTM may then run on cuDNN (under "float32" on torch's native CUDA kernels: cuDNN's are
    about 3-5 times faster there but off by up to 3e-5 on values of order 1).
    ``"bf16"``: Convolution, Deconvolution and InnerProduct cast their inputs and weights to
    bfloat16 (8-bit mantissa) and return float32, and RNN/LSTM may run on cuDNN as under
    "tf32"; every blob, every other layer and every parameter update stay float32. Results
    move by about 1e-2 relative: for speed, not for matching Caffe. The setting is
    process-wide, like ``set_mode_gpu``.
    """
    if precision not in PRECISIONS:
        from caffe.errors import CaffeError

        raise CaffeError(f"set_precision: unknown precision {precision!r}; "
                         f"choose one of {', '.join(PRECISIONS)}")
    STATE.precision = precision
    _apply_precision()


def get_precision() -> str:
    """The current ``set_precision`` choice."""
    return STATE.precision


def _apply_precision() -> None:
    tf32 = STATE.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def low_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in bfloat16 under ``set_precision("bf16")`` when it is float32, else ``t``."""
    if STATE.precision == "bf16" and t.dtype == torch.float32:
        return t.to(torch.bfloat16)
    return t


def tracing() -> bool:
    """Whether torch.export (or torch.compile) is tracing the running code. Layers then skip
    what reads tensor values on the host (range checks, choosing a fast path by the data),
    as the traced program must hold for any values."""
    return _is_compiling()


def recorded(t: torch.Tensor) -> bool:
    """Whether the running code is recorded rather than only run: a trace (``tracing``) or a
    CUDA graph capture on ``t``'s device. Nothing may then be decided from tensor values on the
    host, nor kept from one run to the next, as the recording replays without this Python."""
    return tracing() or (t.is_cuda and torch.cuda.is_current_stream_capturing())


def set_solver_count(count: int) -> None:
    STATE.solver_count = int(count)


def solver_count() -> int:
    return STATE.solver_count


def set_solver_rank(rank: int) -> None:
    STATE.solver_rank = int(rank)


def solver_rank() -> int:
    return STATE.solver_rank


def root_solver() -> bool:
    """Whether this process is solver rank 0, the one that tests, snapshots and logs the
    training loss (Caffe's ``Caffe::root_solver``)."""
    return STATE.solver_rank == 0


def set_multiprocess(multiprocess: bool) -> None:
    """Accepted for pycaffe compatibility: every solver rank is its own process here, joined
    through torch.distributed (see ``caffe.NCCL``)."""


_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}


class _GlogFormatter(logging.Formatter):
    """``I1126 12:00:00.123456 12345 net.py] message``, the line format Caffe log parsers read."""

    def format(self, record: logging.LogRecord) -> str:
        import time

        t = time.localtime(record.created)
        us = int((record.created % 1) * 1e6)
        return "%s%02d%02d %02d:%02d:%02d.%06d %5d %s] %s" % (
            record.levelname[0], t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, us,
            record.process, record.filename, record.getMessage(),
        )


def init_log(level: int | None = None, use_stderr: bool = True) -> None:
    """Send log lines to stderr in glog format. ``level`` follows GLOG_minloglevel
    (0 INFO, 1 WARNING, 2 ERROR); by default it is read from that environment variable."""
    if level is None:
        level = int(os.environ.get("GLOG_minloglevel", "0") or 0)
    for h in list(_log.handlers):
        _log.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr if use_stderr else sys.stdout)
    handler.setFormatter(_GlogFormatter())
    _log.addHandler(handler)
    _log.setLevel(_LEVELS.get(int(level), logging.INFO))
    _log.propagate = False


def log(message: str) -> None:
    """Write one INFO line to Caffe's log (pycaffe's ``caffe.log``)."""
    _log.info(message)


def _default_logging() -> None:
    """As pycaffe, whose glog writes every line to stderr until ``init_log`` is called: INFO
    and above, or from GLOG_minloglevel up."""
    if not _log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_GlogFormatter())
        _log.addHandler(handler)
        lvl = int(os.environ.get("GLOG_minloglevel", "0") or 0)
        _log.setLevel(_LEVELS.get(lvl, logging.WARNING))
        _log.propagate = False


_default_logging()
_apply_precision()
LOG = _log
