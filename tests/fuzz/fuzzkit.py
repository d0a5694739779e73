"""Shared pieces of the fuzz targets: hypothesis settings, the "loads or raises a CaffeError"
check, a peak-memory guard, and byte-level mutation strategies.

Budget: each target runs ``examples`` inputs in the default suite (deterministic, so CI is
stable). ``CAFFE_FUZZ_SCALE=N`` multiplies every budget and draws fresh random inputs (the long
run, see docs/reliability.md); ``--hypothesis-seed=N`` makes a long run repeatable.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from datetime import timedelta

try:
    import resource
except ImportError:  # not on Windows
    resource = None

from google.protobuf import text_format
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import caffe
from caffe.errors import CaffeError
from caffe.proto import caffe_pb2

SCALE = float(os.environ.get("CAFFE_FUZZ_SCALE", "0") or 0)
LONG = SCALE > 0
#: growth of the peak resident memory one input may cause (inputs are a few KiB at most)
MEMORY_LIMIT = 192 << 20

_FOLDER = tempfile.TemporaryDirectory(prefix="neocaffe-fuzz-")


def fuzz_settings(examples: int, deadline_s: float = 10.0) -> settings:
    """Hypothesis settings for a target that tries ``examples`` inputs per default run."""
    n = max(1, int(examples * SCALE)) if LONG else examples
    return settings(
        max_examples=n,
        deadline=timedelta(seconds=deadline_s),
        derandomize=not LONG,
        database=None if not LONG else settings.default.database,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much],
        print_blob=True,
    )


def scratch(name: str) -> str:
    """A path in the fuzz scratch folder (removed when the test process exits)."""
    return os.path.join(_FOLDER.name, name)


def write_bytes(name: str, data: bytes) -> str:
    path = scratch(name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# ---------------------------------------------------------------------------- memory
def _peak_rss() -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"VmHWM:\s+(\d+)\s+kB", f.read())
    except OSError:
        return None
    return int(m.group(1)) << 10 if m else None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _vm_size() -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"VmSize:\s+(\d+)\s+kB", f.read())
    except OSError:
        return None
    return int(m.group(1)) << 10 if m else None


@contextmanager
def _address_space_cap(extra: int):
    """Cap the process's address space at its current size plus ``extra`` bytes while the
    block runs, so a runaway allocation fails at once instead of exhausting the machine."""
    size = _vm_size()
    if resource is None or size is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextmanager
def bounded_memory(limit: int = MEMORY_LIMIT):
    """Fail when the block raises the process's peak resident memory by more than ``limit``
    bytes; its address space is capped meanwhile (Linux; elsewhere the checks are skipped)."""
    if not _reset_peak():
        yield
        return
    before = _peak_rss()
    with _address_space_cap(4 << 30):
        yield
    after = _peak_rss()
    if before is not None and after is not None and after - before > limit:
        raise AssertionError(
            f"peak memory grew by {(after - before) >> 20} MiB while handling one small input: "
            "something allocated what the input merely claims")


# ---------------------------------------------------------------------------- outcomes
def _note(outcome: str) -> None:
    """Count the outcome in hypothesis' statistics (--hypothesis-show-statistics)."""
    try:
        event(outcome)
    except InvalidArgument:  # not inside a hypothesis test
        pass


def check_outcome(fn: Callable[[], object], wrapped_ok: bool = False) -> object:
    """Run ``fn``: it must return or raise a CaffeError with a message. A CaffeError that only
    wraps a non-Caffe exception (a layer's setup raising IndexError, say) is a finding too,
    unless ``wrapped_ok``. Returns what ``fn`` returned, or the CaffeError."""
    try:
        with bounded_memory():
            result = fn()
    except CaffeError as e:
        _note(type(e).__name__)
        assert str(e).strip(), f"{type(e).__name__} without a message"
        cause = e.__cause__
        if not wrapped_ok and cause is not None and not isinstance(cause, CaffeError):
            raise AssertionError(f"a {type(cause).__name__} escaped the checks and was only "
                                 f"wrapped: {e}") from cause
        return e
    _note("loaded")
    return result


# ---------------------------------------------------------------------------- mutations
def _apply(data: bytes, ops: list[tuple[int, int, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, n, chunk in ops:
        if not buf:
            buf.extend(chunk)
            continue
        pos %= len(buf)
        if kind == 0:  # flip bits of one byte
            buf[pos] ^= (n % 255) + 1
        elif kind == 1:  # overwrite bytes
            buf[pos:pos + len(chunk)] = chunk
        elif kind == 2:  # insert bytes
            buf[pos:pos] = chunk
        elif kind == 3:  # delete a run
            del buf[pos:pos + 1 + n % 64]
        elif kind == 4:  # truncate
            del buf[pos:]
        elif kind == 5:  # duplicate a run
            buf[pos:pos] = buf[pos:pos + 1 + n % 64]
        else:  # a large varint (inflated length or count)
            buf[pos:pos] = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
    return bytes(buf)


_INTERESTING = st.sampled_from([b"\x00", b"\xff", b"\x7f", b"\x80\x80\x80\x80\x08",
                                b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x0a\x00",
                                b"\x12\xff\xff\xff\x7f"])
_OPS = st.tuples(st.integers(0, 6), st.integers(0, 1 << 30), st.integers(0, 255),
                 st.one_of(st.binary(min_size=1, max_size=16), _INTERESTING))


def mutated(seeds: list[bytes], max_ops: int = 8) -> st.SearchStrategy[bytes]:
    """Seeds with a few random byte edits (bit flips, overwrites, inserts, deletes, truncation,
    duplication, inflated varints)."""
    return st.builds(_apply, st.sampled_from(seeds), st.lists(_OPS, min_size=1,
                                                               max_size=max_ops))


# ---------------------------------------------------------------------------- a small net
NET = """
name: "fuzznet"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 dim: 3 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def net_param() -> caffe_pb2.NetParameter:
    return text_format.Parse(NET, caffe_pb2.NetParameter())


_NET: list[caffe.Net] = []


def the_net() -> caffe.Net:
    """One small net with learnable parameters (conv, ip), built once per test process."""
    if not _NET:
        _NET.append(caffe.Net(net_param(), caffe.TRAIN))
    return _NET[0]


_SOLVER: list = []


def the_solver(kind: str):
    """A solver of type ``kind`` on :data:`NET`, built once per test process."""
    for s in _SOLVER:
        if s.type == kind:
            return s
    sp = caffe_pb2.SolverParameter(type=kind, base_lr=0.01, lr_policy="fixed", max_iter=1,
                                   snapshot_prefix=scratch("fuzzsolver"))
    sp.net_param.CopyFrom(net_param())
    solver = caffe.get_solver(sp)
    _SOLVER.append(solver)
    return solver


def learned_weights() -> str:
    """Write the net's weights as ``learned.caffemodel`` in the scratch folder (the learned net
    the fuzzed solver states name)."""
    path = scratch("learned.caffemodel")
    if not os.path.exists(path):
        the_net().save(path)
    return path
