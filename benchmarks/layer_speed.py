"""Per-layer speed: every registered layer type, forward + backward through the neocaffe layer
on Blobs, run as a net runs it (``Net._forward``: ``reshape``, skipped while the shapes stay
the same as the net skips it, + ``_forward``, no read-back of the loss; ``Net._backward``:
``backward``; one ``torch.no_grad()`` around the step, as around a net's pass) against its
"twin", the direct
``torch.nn.functional`` / torch expression of the same forward with autograd's backward
(benchmarks/layer_speed_cases.py), timed in the same run, interleaved, as medians of paired
per-round ratios. Each twin is first checked to compute the same tops (and, where the math is
the same, the same diffs).

Targets (ours / twin): <= 1.1 for Convolution, InnerProduct, Pooling, ReLU, LRN, BatchNorm and
Softmax, <= 1.3 for every other type. The layers that run in place in Caffe nets (ReLU,
Dropout, BatchNorm, Scale) are also run in place, and the memory they use beyond their blob's
data and diff is measured op by op (a TorchDispatchMode that follows every tensor storage
created or held, freed when torch frees it).

    python -m benchmarks.layer_speed [--quick] [--types Convolution,ReLU] [--threads 1]
        [--device cpu|cuda] [--json out.json] [--markdown out.md] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import platform
import pstats
import resource
import statistics
import sys
import time
import weakref
from collections.abc import Callable

import numpy as np
import torch
from google.protobuf import text_format
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import caffe
from benchmarks import report
from benchmarks.layer_speed_cases import CASES, SKIPPED, TIGHT_TYPES, Case
from benchmarks.timing import interleaved_samples
from caffe._common import PRECISIONS
from caffe.blob import Blob
from caffe.layer import Phase, ReshapeGate
from caffe.net import create_layer, vacated
from caffe.proto import caffe_pb2

#: full-size buffers Caffe itself keeps for an in-place run (in units of the blob): Dropout's
#: mask, Scale's copy of its input, BatchNorm's normalised input and scratch buffer
CAFFE_INPLACE_BUFFERS = {"ReLU": 0.0, "Dropout": 1.0, "Scale": 1.0, "BatchNorm": 2.0}
#: what an in-place run may use beyond Caffe's buffers: the new bottom diff that the layer API
#: assigns (Caffe overwrites the top diff) and a boolean mask
INPLACE_ALLOWANCE = 1.25


def target_for(type_name: str) -> float:
    return 1.1 if type_name in TIGHT_TYPES else 1.3


# ---------------------------------------------------------------------------------- the pair
class Bench:
    """One case built for timing: the layer on its blobs, and the twin on its leaves."""

    def __init__(self, case: Case, mode: str, device: torch.device) -> None:
        caffe.set_random_seed(1)
        self.case = case
        self.spec = spec = case.factory(mode)
        self.device = device
        self.x0 = [t.to(device) for t in spec.bottoms]
        self.bottom = []
        for t in self.x0:
            blob = Blob(*t.shape, device=device)
            blob.tensor = t.clone()
            self.bottom.append(blob)
        lp = caffe_pb2.LayerParameter(name=case.name.replace(" ", "_"), type=case.type)
        text_format.Merge(spec.param, lp)
        lp.bottom.extend(f"b{i}" for i in range(len(self.bottom)))
        phase = Phase.TRAIN if spec.phase == "TRAIN" else Phase.TEST
        lp.phase = phase
        if spec.in_place:
            lp.top.append("b0")
            self.top = [self.bottom[0]]
        else:
            lp.top.extend(f"t{i}" for i in range(spec.num_tops))
            self.top = [Blob(device=device) for _ in range(spec.num_tops)]
        self.layer = layer = create_layer(lp, phase)
        layer.SetUp(self.bottom, self.top)
        if spec.after_setup is not None:
            spec.after_setup(layer, device)
        self.params0 = [b.tensor.clone() for b in layer.blobs]
        self.backward = type(layer).has_backward
        skip = type(layer).refuses_force_backward(len(self.bottom))
        grad = spec.grad or tuple(i not in skip for i in range(len(self.bottom)))
        self.pd = [bool(g) and self.backward for g in grad]
        self.dys: list[torch.Tensor] = []
        # what the net lets go of before this layer's forward and backward (on the CPU)
        self.vacate_tops, self.vacate_diffs = (
            vacated(layer, self.bottom, self.top, self.pd) if torch.device(device).type == "cpu"
            else ((), ()))
        self._restore()
        layer.Forward(self.bottom, self.top)  # tops take their final shapes (Filter)
        self.gate = ReshapeGate(layer, self.bottom, self.top)  # the net's reshape skipping
        gen = torch.Generator().manual_seed(7)
        for i, t in enumerate(self.top):
            w = layer._loss(i)
            dy = (torch.full(t.shape, w) if w else torch.randn(t.shape, generator=gen))
            self.dys.append(dy.to(device))
            if not spec.in_place:
                t.diff_tensor = self.dys[-1].clone()
        self._build_twin()

    # ------------------------------------------------------------------ ours
    def _restore(self) -> None:
        """In place, the layer overwrote its input and diff: hand it a fresh input, as the
        producing layer of a net does (the twin gets a fresh copy likewise)."""
        if self.spec.in_place:
            self.bottom[0].tensor = self.x0[0].clone()
            if self.dys:
                self.bottom[0].diff_tensor = self.dys[0]

    def _forward_body(self) -> None:
        self.gate.reshape(self.layer, self.bottom, self.top)  # skipped as the net skips it
        for blob in self.vacate_tops:
            blob.vacate()
        self.layer._forward(self.bottom, self.top)

    def _backward_body(self) -> None:
        if self.backward:
            for blob in self.vacate_diffs:
                blob.vacate_diff()
            self.layer.backward(self.top, self.pd, self.bottom)

    def net_forward(self) -> None:
        """The layer's share of ``Net._forward``: ``reshape`` (unless the net would skip it)
        then ``_forward``, under ``torch.no_grad()``. The loss is not read back: a net reads
        its loss once per step, after every layer, and a training step keeps it a device
        tensor (``layer.Forward`` would return it as a float, a wait for the device per
        call)."""
        with torch.no_grad():
            self._forward_body()

    def ours_backward(self) -> None:
        """The layer's share of ``Net._backward``: ``backward`` under ``torch.no_grad()``."""
        with torch.no_grad():
            self._backward_body()

    def ours_step(self) -> None:
        """Forward then backward under one ``torch.no_grad()``, as a net's pass enters it
        once for all its layers."""
        with torch.no_grad():
            self._restore()
            self._forward_body()
            self._backward_body()

    # ------------------------------------------------------------------ twin
    def _build_twin(self) -> None:
        spec = self.spec
        self.b_leaves = [x.clone().requires_grad_(need and x.is_floating_point())
                         for x, need in zip(self.x0, self.pd)]
        params = [p.clone() for p in self.params0]
        if spec.twin_params is not None:
            params = [p.detach().clone() for p in spec.twin_params(params)]
        learn = spec.param_grads and self.backward
        self.p_leaves = [p.requires_grad_(learn) for p in params]
        if spec.twin_ready is not None:
            with torch.no_grad():
                spec.twin_ready(self.p_leaves)
        self.wanted = [t for t in self.b_leaves + self.p_leaves if t.requires_grad]
        if spec.twin is None:
            self.twin_dys = []
            return
        outs = self._twin_outputs(self.twin_inputs())
        self.twin_dys = [dy.reshape(o.shape) if o.numel() == dy.numel() else None
                         for o, dy in zip(outs, self.dys)]

    def twin_inputs(self) -> list[torch.Tensor]:
        """The twin's bottoms: in place, the input is a fresh copy the twin may overwrite (it
        stands for the producing layer's output; ours restores its input likewise)."""
        if self.spec.in_place:
            return [self.b_leaves[0].clone()] + self.b_leaves[1:]
        return self.b_leaves

    def _twin_outputs(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.wanted:
            with torch.no_grad():
                return self.spec.twin(inputs, self.p_leaves)
        return self.spec.twin(inputs, self.p_leaves)

    def twin_grads(self, outs: list[torch.Tensor]):
        pairs = [(o, dy) for o, dy in zip(outs, self.twin_dys)
                 if o.requires_grad and dy is not None]
        if not pairs or not self.wanted:
            return None
        return torch.autograd.grad([o for o, _ in pairs], self.wanted, [dy for _, dy in pairs],
                                   allow_unused=True)

    def twin_step(self) -> None:
        if self.spec.manual_twin is not None:
            self.spec.manual_twin(self.b_leaves)
            return
        self.twin_grads(self._twin_outputs(self.twin_inputs()))

    # ------------------------------------------------------------------ check
    def verify(self) -> str:
        """Empty when the twin computes the same tops (and diffs) as the layer; else what
        differs."""
        spec = self.spec
        for blob in self.layer.blobs:
            if blob.has_diff:
                blob.diff_tensor.zero_()
        self.ours_step()
        if spec.manual_twin is not None:
            return ""
        tops = [t.tensor.detach().clone() for t in self.top]
        outs = self._twin_outputs(self.twin_inputs())
        if spec.check is not None:
            return spec.check(tops, [o.detach() for o in outs])
        problems = []
        for i, (ours, twin) in enumerate(zip(tops, outs)):
            msg = _compare(ours, twin.detach().reshape(ours.shape))
            if msg:
                problems.append(f"top {i}: {msg}")
        grads = self.twin_grads(outs)
        if grads is not None:
            got = iter(grads)
            for i, leaf in enumerate(self.b_leaves):
                if leaf.requires_grad:
                    g = next(got)
                    msg = _compare(self.bottom[i].diff_tensor, g)
                    if msg:
                        problems.append(f"bottom {i} diff: {msg}")
            if spec.twin_params is None:
                for j, leaf in enumerate(self.p_leaves):
                    if leaf.requires_grad:
                        msg = _compare(self.layer.blobs[j].diff_tensor, next(got))
                        if msg:
                            problems.append(f"param {j} diff: {msg}")
        return "; ".join(problems)


def _compare(ours: torch.Tensor, twin: torch.Tensor | None) -> str:
    """np.allclose with a tolerance scaled to the values (float32 sums of many terms)."""
    b = (torch.zeros_like(ours) if twin is None else twin).detach().double().cpu().numpy()
    a = ours.detach().double().cpu().numpy()
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    scale = float(np.abs(b).max()) if b.size else 0.0
    if np.allclose(a, b, rtol=1e-3, atol=1e-5 + 1e-4 * scale):
        return ""
    return f"max abs difference {float(np.abs(a - b).max()):.3g} (max |value| {scale:.3g})"


# ---------------------------------------------------------------------------------- timing
def _sync_for(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


def _summary(ours: list[float], twin: list[float]) -> dict:
    """Medians in ms and the median (and quartiles) of the paired per-round ratios."""
    ratios = [a / b for a, b in zip(ours, twin)]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"ours_ms": 1e3 * statistics.median(ours), "twin_ms": 1e3 * statistics.median(twin),
            "ratio": statistics.median(ratios), "ratio_q1": q[0], "ratio_q3": q[2]}


def time_bench(bench: Bench, repeats: int, sample_s: float, cpu_clock: bool) -> dict:
    """Time both sides interleaved. Wall clock always; with ``cpu_clock`` (one CPU thread)
    also the calling thread's CPU time, which a loaded machine's preemption does not inflate:
    then that is the primary measure."""
    sync = _sync_for(bench.device)
    fns = {"ours": bench.ours_step, "twin": bench.twin_step}
    single = {}
    for name, fn in fns.items():
        fn()
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        single[name] = time.perf_counter() - t0
    inner = max(1, min(2000, round(sample_s / max(max(single.values()), 1e-7))))
    spent: dict[str, list[float]] = {name: [] for name in fns}

    def on_cpu_clock(name: str, fn: Callable[[], None]) -> Callable[[], None]:
        def step() -> None:
            t0 = time.thread_time()
            fn()
            spent[name].append(time.thread_time() - t0)
        return step

    if cpu_clock:
        fns = {name: on_cpu_clock(name, fn) for name, fn in fns.items()}
    warmup = 1
    wall = interleaved_samples(fns, repeats=repeats, inner=inner, warmup=warmup, sync=sync)
    out = {"inner": inner, "repeats": repeats, "clock": "cpu" if cpu_clock else "wall",
           "wall": _summary(wall["ours"], wall["twin"])}
    if cpu_clock:
        rounds = {name: [sum(v[warmup + r * inner:warmup + (r + 1) * inner]) / inner
                         for r in range(repeats)] for name, v in spent.items()}
        out["cpu"] = _summary(rounds["ours"], rounds["twin"])
    out.update(out[out["clock"]])
    return out


# ---------------------------------------------------------------------------------- memory
class StorageTracker(TorchDispatchMode):
    """Follows tensor storages: those created by ops while active (their bytes per phase, and
    how many are full-size) and those registered by hand; ``live`` and ``peak`` count the
    followed storages still alive (torch frees a storage when its last tensor goes)."""

    def __init__(self, full_bytes: int) -> None:
        super().__init__()
        self.full_bytes = full_bytes
        self.live = 0
        self.peak = 0
        self.phase = "setup"
        self.allocated: dict[str, int] = {}
        self.full_allocs: dict[str, int] = {}
        self._followed: set[int] = set()
        self.start("setup")

    def _release(self, ptr: int, nbytes: int) -> None:
        self.live -= nbytes
        self._followed.discard(ptr)

    def follow(self, t: torch.Tensor) -> bool:
        """Count ``t``'s storage as live until torch frees it; False if already followed."""
        st = t.untyped_storage()
        ptr, nbytes = st.data_ptr(), st.nbytes()
        if nbytes == 0 or ptr in self._followed:
            return False
        self._followed.add(ptr)
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(st, self._release, ptr, nbytes)
        return True

    def follow_all(self, tensors: list[torch.Tensor]) -> int:
        """Follow each storage; the bytes of those not followed before."""
        return sum(t.untyped_storage().nbytes() for t in tensors if self.follow(t))

    def start(self, phase: str) -> None:
        self.phase = phase
        self.allocated.setdefault(phase, 0)
        self.full_allocs.setdefault(phase, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                nbytes = t.untyped_storage().nbytes()
                if self.follow(t):
                    self.allocated[self.phase] += nbytes
                    self.full_allocs[self.phase] += nbytes >= 0.9 * self.full_bytes
        return out


def _layer_tensors(layer) -> list[torch.Tensor]:
    """Tensors the layer keeps in its attributes (saved inputs, masks, statistics)."""
    found = []
    for value in vars(layer).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        found.extend(v for v in items if isinstance(v, torch.Tensor))
    return found


def measure_in_place_memory(bench: Bench) -> dict:
    """Bytes beyond the blob's data and diff (and the params) that one steady-state in-place
    forward + backward holds at its peak, for ours and for the twin, in units of the blob."""
    blob = bench.bottom[0]
    blob_bytes = blob.tensor.numel() * blob.tensor.element_size()
    for _ in range(2):
        bench.ours_step()
    bench._restore()
    ours = StorageTracker(blob_bytes)
    necessary = [blob.tensor, blob.diff_tensor]
    for p in bench.layer.blobs:
        necessary += [p.tensor, p.diff_tensor]
    with ours:
        base = ours.follow_all(necessary)
        held = ours.follow_all(_layer_tensors(bench.layer))
        ours.peak = ours.live
        ours.start("forward")
        bench.net_forward()
        ours.start("backward")
        bench.ours_backward()
    inputs = bench.twin_inputs()
    twin = StorageTracker(blob_bytes)
    with twin:
        twin_base = twin.follow_all([inputs[0], bench.twin_dys[0]])
        twin.peak = twin.live
        twin.start("forward")
        outs = bench._twin_outputs(inputs)
        twin.start("backward")
        bench.twin_grads(outs)
        del outs
    caffe_own = CAFFE_INPLACE_BUFFERS.get(bench.case.type, 0.0)
    extra = (ours.peak - base) / blob_bytes
    return {
        "type": bench.case.type, "size": bench.spec.size, "blob_mb": blob_bytes / 2 ** 20,
        "ours_held": held / blob_bytes,
        "ours_peak_extra": extra,
        "ours_full_allocs": [ours.full_allocs.get("forward", 0),
                             ours.full_allocs.get("backward", 0)],
        "ours_alloc": [ours.allocated.get("forward", 0) / blob_bytes,
                       ours.allocated.get("backward", 0) / blob_bytes],
        "twin_peak_extra": (twin.peak - twin_base) / blob_bytes,
        "twin_full_allocs": [twin.full_allocs.get("forward", 0),
                             twin.full_allocs.get("backward", 0)],
        "caffe_buffers": caffe_own,
        "extra_full_size_buffers": max(0, math.floor(extra - caffe_own - INPLACE_ALLOWANCE
                                                     + 0.99)),
        "status": "PASS" if extra <= caffe_own + INPLACE_ALLOWANCE + 1e-6 else "MISS",
    }


# ---------------------------------------------------------------------------------- op counts
class OpCounter(TorchDispatchMode):
    """Counts the aten ops run while active (autograd's backward ops included)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(bench: Bench) -> list[int]:
    """aten ops of one step of ours and of the twin."""
    counts = []
    for fn in (bench.ours_step, bench.twin_step):
        fn()
        with OpCounter() as counter:
            fn()
        counts.append(counter.count)
    return counts


def loops_with_size(ops: list[int], ops_tiny: list[int]) -> bool:
    """True when ours runs clearly more ops at the real size than at the tiny one while the
    twin does not: a Python loop over elements (or rows) somewhere."""
    ours_growth = ops[0] / max(ops_tiny[0], 1)
    twin_growth = ops[1] / max(ops_tiny[1], 1)
    return ours_growth > 1.5 * twin_growth and ops[0] > ops_tiny[0] + 4


# ---------------------------------------------------------------------------------- profile
def profile_bench(bench: Bench, steps: int = 10) -> dict:
    """Per step: the aten ops each side runs (count, self ms; torch.profiler), the profiled
    step's CPU time and minor page faults (fresh memory from the OS); and the Python functions
    of ours that cost most (cProfile)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if bench.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    result = {}
    for name, fn in (("ours", bench.ours_step), ("twin", bench.twin_step)):
        fn()
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        with profile(activities=activities) as prof:
            t0 = time.thread_time()
            for _ in range(steps):
                fn()
            step_ms = (time.thread_time() - t0) / steps * 1e3
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
        ops = {}
        for evt in prof.key_averages():
            if evt.key.startswith("aten::") and evt.self_cpu_time_total > 0:
                ops[evt.key] = [evt.count / steps, evt.self_cpu_time_total / steps / 1e3]
        result[name] = {"ops": ops, "op_ms": sum(v[1] for v in ops.values()),
                        "op_calls": sum(v[0] for v in ops.values()), "step_ms": step_ms,
                        "faults": faults}
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(steps):
        bench.ours_step()
    pr.disable()
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(8)
    result["ours_python"] = out.getvalue()
    return result


def _profile_summary(name: str, timing: dict, prof: dict) -> str:
    o, t = prof["ours"], prof["twin"]
    lines = [(f"--- {name}: ours {timing['ours_ms']:.3f} ms, twin {timing['twin_ms']:.3f} ms; "
              "profiled step (CPU ms / aten self ms / aten calls / page faults): ours "
              f"{o['step_ms']:.3f} / {o['op_ms']:.3f} / {o['op_calls']:.0f} / {o['faults']:.0f}, "
              f"twin {t['step_ms']:.3f} / {t['op_ms']:.3f} / {t['op_calls']:.0f} / "
              f"{t['faults']:.0f}")]
    keys = set(prof["ours"]["ops"]) | set(prof["twin"]["ops"])
    rows = []
    for k in keys:
        o = prof["ours"]["ops"].get(k, [0, 0.0])
        t = prof["twin"]["ops"].get(k, [0, 0.0])
        rows.append((abs(o[1] - t[1]), k, o, t))
    rows.sort(reverse=True)
    lines.append(f"    {'op':40s} {'ours n':>7s} {'ours ms':>8s} {'twin n':>7s} {'twin ms':>8s}")
    for _, k, o, t in rows[:10]:
        lines.append(f"    {k:40s} {o[0]:7.1f} {o[1]:8.3f} {t[0]:7.1f} {t[1]:8.3f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- running
def select_cases(types: list[str] | None) -> list[Case]:
    if not types:
        return list(CASES)
    wanted = set(types)
    unknown = wanted - {c.type for c in CASES} - set(SKIPPED)
    if unknown:
        raise SystemExit(f"unknown or unbenchmarked layer types: {sorted(unknown)}")
    return [c for c in CASES if c.type in wanted]


def run_case(case: Case, mode: str, device: torch.device, repeats: int, sample_s: float,
             profile: bool = False) -> dict:
    bench = Bench(case, mode, device)
    check = bench.verify()
    row = {"type": case.type, "variant": case.variant, "size": bench.spec.size,
           "in_place": bench.spec.in_place,
           "pass": "fwd+bwd" if bench.backward else "fwd", "check": check or "ok",
           "target": target_for(case.type), "note": bench.spec.note}
    row.update(time_bench(bench, repeats, sample_s,
                          cpu_clock=device.type == "cpu" and torch.get_num_threads() == 1))
    row["status"] = "PASS" if row["ratio"] <= row["target"] else "MISS"
    row["ops"] = count_ops(bench)
    row["ops_tiny"] = row["ops"] if mode == "tiny" else count_ops(Bench(case, "tiny", device))
    row["loops"] = loops_with_size(row["ops"], row["ops_tiny"])
    if profile and row["status"] == "MISS":
        row["profile"] = profile_bench(bench)
    if bench.spec.in_place:
        row["memory"] = measure_in_place_memory(bench)
    return row


def run(types: list[str] | None = None, mode: str = "quick", device: str = "cpu",
        threads: int | None = 1, repeats: int | None = None, sample_s: float | None = None,
        profile: bool = False, log: Callable[[str], None] | None = print) -> dict:
    """Run the selected cases; returns the results as a JSON-ready dict."""
    dev = torch.device(device)
    if dev.type == "cuda":
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    if threads:
        torch.set_num_threads(threads)
    repeats = repeats or {"full": 21, "quick": 21, "tiny": 1}[mode]
    sample_s = sample_s if sample_s is not None else {"full": 0.05, "quick": 0.02,
                                                      "tiny": 0.0}[mode]
    cases = select_cases(types)
    rows = []
    for c in cases:
        row = run_case(c, mode, dev, repeats, sample_s, profile)
        rows.append(row)
        if log:
            log(_row_line(row))
            if "profile" in row:
                log(_profile_summary(f"{row['type']} {row['variant']}".strip(), row,
                                     row["profile"]))
    wanted = set(types or []) or None
    skipped = {t: r for t, r in SKIPPED.items() if wanted is None or t in wanted}
    missing = sorted(set(caffe.layer_type_list()) - {c.type for c in CASES} - set(SKIPPED))
    return {
        "meta": {"mode": mode, "device": str(dev), "threads": torch.get_num_threads(),
                 "torch": torch.__version__, "python": platform.python_version(),
                 "machine": platform.processor() or platform.machine(),
                 "cpus": os.cpu_count(), "repeats": repeats, "sample_s": sample_s,
                 "precision": caffe.get_precision(), "date": time.strftime("%Y-%m-%d %H:%M")},
        "rows": rows, "skipped": skipped, "not_covered": missing,
    }


# ---------------------------------------------------------------------------------- reports
def _row_line(row: dict) -> str:
    name = f"{row['type']} {row['variant']}".strip()
    check = "" if row["check"] == "ok" else f"  CHECK: {row['check']}"
    loop = "  LOOP: aten ops grow with the size" if row.get("loops") else ""
    return (f"{name:34s} {row['size']:28s} {row['ours_ms']:9.3f} {row['twin_ms']:9.3f} "
            f"{row['ratio']:6.2f} {row['target']:5.1f} {row['status']}{check}{loop}")


def text_table(result: dict) -> str:
    head = (f"{'layer':34s} {'size':28s} {'ours ms':>9s} {'twin ms':>9s} {'ratio':>6s} "
            f"{'tgt':>5s} result")
    lines = [head, "-" * len(head)] + [_row_line(r) for r in result["rows"]]
    mem = [r["memory"] for r in result["rows"] if "memory" in r]
    if mem:
        lines += ["", "In-place memory beyond the blob's data and diff (units of the blob):",
                  f"{'layer':12s} {'ours peak':>9s} {'ours held':>9s} {'twin peak':>9s} "
                  f"{'Caffe':>6s} {'extra bufs':>10s} result"]
        for m in mem:
            lines.append(f"{m['type']:12s} {m['ours_peak_extra']:9.2f} {m['ours_held']:9.2f} "
                         f"{m['twin_peak_extra']:9.2f} {m['caffe_buffers']:6.1f} "
                         f"{m['extra_full_size_buffers']:10d} {m['status']}")
    misses = [r for r in result["rows"] if r["status"] == "MISS"]
    bad = [r for r in result["rows"] if r["check"] != "ok"]
    lines += ["", f"{len(result['rows']) - len(misses)}/{len(result['rows'])} cases within "
              f"target; twin mismatches: {len(bad)}"]
    return "\n".join(lines)


def _clock_text(result: dict) -> str:
    clocks = {r["clock"] for r in result["rows"]}
    if clocks == {"cpu"}:
        return ("the calling thread's CPU time (with one torch thread all compute runs "
                "there; preemption on a loaded machine does not inflate it), the wall-clock "
                "ratio beside it.")
    return "wall clock."


def markdown(result: dict) -> str:
    m = result["meta"]
    out = [f"# Per-layer speed: neocaffe layer vs direct torch twin ({m['device']})", "",
           f"`{m.get('command', 'python -m benchmarks.layer_speed')}` — {m['date']}, torch "
           f"{m['torch']}, Python {m['python']}, {m['cpus']} CPUs ({m['machine']}), "
           f"{m['threads']} thread(s); sizes: {m['mode']}; precision: "
           f"{m.get('precision', 'float32')}"
           + (f"; host allocator: {m['malloc']}" if m.get("malloc") else "") + ".", "",
           "Each row times the layer as a net runs it, `reshape` + `_forward` then `backward` "
           "under `torch.no_grad()` as in `Net._forward` / `Net._backward` (forward only for "
           "layers without a backward; the loss stays a tensor, as in a training step, which "
           "reads it once after all layers), against the twin's forward + "
           "`torch.autograd.grad`, interleaved "
           f"({m['repeats']} rounds). Clock: {_clock_text(result)} The ms are medians per "
           "step; the ratio is the median of the per-round ratios ours / twin (q1-q3 in "
           "brackets). "
           "The twin's tops (and diffs) were checked against ours first (column check). "
           "aten ops: ops per step of ours / twin at this size and at a tiny size (a count "
           "growing with the size flags a Python loop over elements: LOOP).", "",
           "| layer | size | pass | ours ms | twin ms | ratio [q1-q3] | wall ratio | target | "
           "result | check | aten ops (tiny) |",
           "|---|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    for r in result["rows"]:
        name = f"{r['type']} {r['variant']}".strip()
        ops = f"{r['ops'][0]}/{r['ops'][1]} ({r['ops_tiny'][0]}/{r['ops_tiny'][1]})"
        out.append(f"| {name} | {r['size']} | {r['pass']} | {r['ours_ms']:.3f} | "
                   f"{r['twin_ms']:.3f} | {r['ratio']:.2f} [{r['ratio_q1']:.2f}-"
                   f"{r['ratio_q3']:.2f}] | {r['wall']['ratio']:.2f} | {r['target']:.1f} | "
                   f"**{r['status']}** | {r['check']} | {ops}{' LOOP' if r['loops'] else ''} |")
    misses = [f"{r['type']} {r['variant']}".strip() for r in result["rows"]
              if r["status"] == "MISS"]
    out += ["", f"{len(result['rows']) - len(misses)}/{len(result['rows'])} cases within "
            f"target. Misses: {', '.join(misses) or 'none'}."]
    mem = [r["memory"] for r in result["rows"] if "memory" in r]
    if mem:
        out += ["", "## In-place layers: memory beyond the blob's data and diff", "",
                "Bytes of tensor storage alive at the peak of one steady-state in-place "
                "forward + backward, beyond the blob's data and diff and the parameters, in "
                "units of the blob size (ours: bottom is top; twin: the in-place torch op on a "
                "fresh activation, or out of place where torch has none). 'held' is what the "
                "layer keeps between steps (saved inputs, masks). 'Caffe' is what BVLC Caffe "
                f"itself keeps. Allowed: Caffe's buffers + {INPLACE_ALLOWANCE} (the new bottom "
                "diff the layer API assigns, plus a boolean mask).", "",
                "| layer | size | blob MB | ours peak extra | ours held | full-size allocs "
                "fwd/bwd | twin peak extra | twin allocs fwd/bwd | Caffe | extra full-size "
                "buffers | result |",
                "|---|---|---:|---:|---:|---|---:|---|---:|---:|---|"]
        for x in mem:
            out.append(f"| {x['type']} | {x['size']} | {x['blob_mb']:.1f} | "
                       f"{x['ours_peak_extra']:.2f} | {x['ours_held']:.2f} | "
                       f"{x['ours_full_allocs'][0]}/{x['ours_full_allocs'][1]} | "
                       f"{x['twin_peak_extra']:.2f} | "
                       f"{x['twin_full_allocs'][0]}/{x['twin_full_allocs'][1]} | "
                       f"{x['caffe_buffers']:.0f} | {x['extra_full_size_buffers']} | "
                       f"**{x['status']}** |")
    if result["skipped"]:
        out += ["", "## Not timed", ""]
        out += [f"- {t}: {why}" for t, why in sorted(result["skipped"].items())]
    if result["not_covered"]:
        out += ["", f"Registered types without a case: {', '.join(result['not_covered'])}"]
    notes = [r for r in result["rows"] if r["note"]]
    if notes:
        out += ["", "## Twin notes", ""]
        out += [f"- {r['type']} {r['variant']}".rstrip() + f": {r['note']}" for r in notes]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about 1/4 batch)")
    ap.add_argument("--types", help="comma-separated layer types (default: all)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--repeats", type=int, help="interleaved rounds (default 21)")
    ap.add_argument("--precision", choices=PRECISIONS, default="float32",
                    help="caffe.set_precision for both sides (default float32)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write a Markdown report here")
    report.add_malloc_argument(ap)
    ap.add_argument("--profile", action="store_true",
                    help="profile the cases that miss their target (torch.profiler, cProfile)")
    args = ap.parse_args(argv)
    types = [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None
    malloc = report.host_allocator(args.malloc)
    caffe.set_precision(args.precision)
    result = run(types, "quick" if args.quick else "full", args.device, args.threads,
                 args.repeats, profile=args.profile)
    argv = sys.argv[1:] if argv is None else argv
    result["meta"]["command"] = " ".join(["python -m benchmarks.layer_speed", *argv])
    result["meta"]["malloc"] = malloc
    print()
    print(text_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
