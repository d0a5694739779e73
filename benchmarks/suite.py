"""The benchmark suite: every (net, batch, mode) case runs through neocaffe and through its
native PyTorch twin (and OpenCV DNN for inference, where installed), checks that both give the
same results, times them interleaved at each thread count, and measures peak memory.

Modes: ``forward`` (TEST net, ``net.forward()``), ``infer_b1`` (the same at batch 1),
``fwdbwd`` (TRAIN net, ``net.forward_backward()`` against ``loss.backward()``), ``solver``
(``solver.step(1)`` of an SGD solver with momentum and weight decay against ``zero_grad``,
forward, backward and ``torch.optim.SGD.step``).
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import caffe
from benchmarks import flops, netdefs
from benchmarks.memory import LiveBytes, held_by_class, in_place_report
from benchmarks.timing import interleaved_samples
from benchmarks.twin import TwinNet
from caffe._common import STATE
from caffe.proto import caffe_pb2, files

#: ratio targets (neocaffe time / twin time) per mode, and for peak training memory
TARGETS = {"forward": 1.10, "infer_b1": 1.30, "fwdbwd": 1.15, "solver": 1.20}
MEMORY_TARGET = 1.30
FORWARD_MODES = ("forward", "infer_b1")
TRAIN_MODES = ("fwdbwd", "solver")
SOLVER_SETTINGS = {"base_lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}
#: relative error (||a - b|| / ||b||) above which the two sides disagree
TOLERANCE = 1e-4
#: errors against float64 that max-pooling near-ties alone produce in deep nets' gradients
NEAR_TIE_NOISE = 5e-3
#: nets OpenCV DNN is compared on (the targets name CaffeNet and ResNet-50)
OPENCV_NETS = ("lenet", "cifar10_quick", "caffenet", "googlenet", "resnet50")


@dataclass(frozen=True)
class Case:
    net: str
    batch: int
    mode: str

    @property
    def label(self) -> str:
        return f"{self.net} b{self.batch} {self.mode}"

    @property
    def heavy(self) -> bool:
        return self.net in ("caffenet", "googlenet", "resnet50") and self.batch > 1


def default_cases() -> list[Case]:
    """The issue's list: every net at its batch in the three modes, plus batch-1 inference."""
    out = []
    for net, batch in (("lenet", 64), ("cifar10_quick", 100), ("caffenet", 10),
                       ("caffenet", 64), ("googlenet", 10), ("resnet50", 8)):
        out += [Case(net, batch, m) for m in ("forward", "fwdbwd", "solver")]
    out += [Case("caffenet", 1, "infer_b1"), Case("resnet50", 1, "infer_b1")]
    return out


def select(cases: list[Case], only: str | None) -> list[Case]:
    """Keep the cases matching any of the comma-separated ``net``, ``net:mode`` or
    ``net:mode:batch`` filters."""
    if not only:
        return cases
    keep = []
    for c in cases:
        for f in only.split(","):
            parts = f.strip().split(":")
            if parts[0] != c.net:
                continue
            if len(parts) > 1 and parts[1] and parts[1] != c.mode:
                continue
            if len(parts) > 2 and int(parts[2]) != c.batch:
                continue
            keep.append(c)
            break
    return keep


# ---------------------------------------------------------------------------- devices
@dataclass
class Device:
    """Where both sides run: ``cpu`` or ``cuda`` (neocaffe in GPU mode)."""

    name: str = "cpu"

    def __post_init__(self) -> None:
        if self.name == "cuda":
            caffe.set_mode_gpu()
            caffe.set_device(0)
        else:
            caffe.set_mode_cpu()
        self.torch = torch.device(self.name)

    @property
    def sync(self) -> Callable[[], None] | None:
        return torch.cuda.synchronize if self.name == "cuda" else None

    def measure_peak(self, make: Callable[[], object], runs: int = 2,
                     built: Callable[[object], None] | None = None) -> tuple[int, object]:
        """Build with ``make()``, run it ``runs`` times, and return the peak bytes of live
        tensors during the last run (everything ``make`` built counts) and the built side.
        ``built(side)`` is called before the first run."""
        gc.collect()
        built = built or (lambda side: None)
        if self.name == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            side = make()
            built(side)
            for _ in range(runs - 1):
                side.run()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            side.run()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - base, side
        with LiveBytes() as live:
            side = make()
            built(side)
            for _ in range(runs - 1):
                side.run()
            live.reset_peak()
            side.run()
        return live.peak, side


# ---------------------------------------------------------------------------- the sides
def solver_param(train: caffe_pb2.NetParameter) -> caffe_pb2.SolverParameter:
    sp = caffe_pb2.SolverParameter(type="SGD", lr_policy="fixed", display=0, max_iter=10 ** 9,
                                   **SOLVER_SETTINGS)
    sp.train_net_param.CopyFrom(train)
    return sp


def copy_weights(src, dst) -> None:
    """Copy every parameter of caffe net ``src`` into caffe net ``dst`` (same layers)."""
    theirs = src.params
    for name, blobs in dst.params.items():
        for mine, their in zip(blobs, theirs[name]):
            mine.tensor.copy_(their.tensor)


class CaffeSide:
    """neocaffe: a TEST net, a TRAIN net, or an SGD solver on the TRAIN net."""

    def __init__(self, case: Case, param, ref, inputs: dict[str, torch.Tensor],
                 cuda_graph: bool = False) -> None:
        self.mode = case.mode
        self.solver = None
        if case.mode in FORWARD_MODES:
            self.net = caffe.Net(param, caffe.TEST)
        elif case.mode == "fwdbwd":
            self.net = caffe.Net(param, caffe.TRAIN)
        else:
            self.solver = caffe.get_solver(solver_param(param))
            self.net = self.solver.net
        copy_weights(ref, self.net)
        for name, value in inputs.items():
            self.net.blobs[name].data[...] = value.numpy()
        if cuda_graph:
            self.net.use_cuda_graph()

    def run(self) -> None:
        if self.mode in FORWARD_MODES:
            self.net.forward()
        elif self.mode == "fwdbwd":
            self.net.forward_backward()
        else:
            self.solver.step(1)

    def clear_diffs(self) -> None:
        self.net.clear_param_diffs()

    def params(self) -> dict[str, torch.Tensor]:
        return {f"{n}[{j}]": b.tensor for n, bs in self.net.params.items()
                for j, b in enumerate(bs)}

    def grads(self) -> dict[str, torch.Tensor]:
        return {f"{n}[{j}]": b.diff_tensor for n, bs in self.net.params.items()
                for j, b in enumerate(bs) if self.net.layer_dict[n].type != "BatchNorm"}


class TwinSide:
    """The native PyTorch twin of the same case (in ``dtype``: float64 gives the check its
    reference)."""

    def __init__(self, case: Case, param, ref, inputs: dict[str, torch.Tensor],
                 device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.mode = case.mode
        self.model = TwinNet(param, ref).to(device=device, dtype=dtype)
        self.x = inputs["data"].to(device=device, dtype=dtype).clone()
        self.label = inputs["label"].to(device).clone() if "label" in inputs else None
        self.opt = None
        if case.mode in FORWARD_MODES:
            self.model.eval()
        else:
            self.model.train()
            if case.mode == "solver":
                self.opt = self.model.sgd(ref, **SOLVER_SETTINGS)
        self.loss: torch.Tensor | None = None

    def run(self) -> None:
        if self.mode in FORWARD_MODES:
            with torch.no_grad():
                # the output on the host, as pycaffe's net.forward() returns it (a copy and a
                # wait on CUDA; free on the CPU)
                self.model(self.x).cpu()
        elif self.mode == "fwdbwd":
            self.loss = self.model(self.x, self.label)
            self.loss.backward()
        else:
            self.opt.zero_grad()
            self.loss = self.model(self.x, self.label)
            self.loss.backward()
            self.opt.step()

    def clear_diffs(self) -> None:
        self.model.zero_grad(set_to_none=False)

    def _by_caffe_name(self, get) -> dict[str, torch.Tensor]:
        out = {}
        for lname, keys in self.model.param_names.items():
            for j, k in enumerate(keys):
                out[f"{lname}[{j}]"] = get(self.model.weights[k])
        return out

    def params(self) -> dict[str, torch.Tensor]:
        return self._by_caffe_name(lambda p: p.detach())

    def grads(self) -> dict[str, torch.Tensor]:
        return self._by_caffe_name(lambda p: p.grad if p.grad is not None
                                   else torch.zeros_like(p))


class OpenCVSide:
    """OpenCV DNN reading the same deploy prototxt and weights (a caffemodel written by
    neocaffe)."""

    def __init__(self, param, ref, inputs: dict[str, torch.Tensor], folder: str) -> None:
        import cv2

        proto = os.path.join(folder, "deploy.prototxt")
        model = os.path.join(folder, "weights.caffemodel")
        files.write_text(proto, param)
        ref.save(model)
        self.net = cv2.dnn.readNetFromCaffe(proto, model)
        self.x = inputs["data"].numpy().copy()
        self.net.setInput(self.x)

    def run(self):
        return self.net.forward()


def opencv_available() -> str | None:
    """The OpenCV version when a 4.x ``cv2`` with the DNN module is importable."""
    try:
        import cv2
    except ImportError:
        return None
    if not cv2.__version__.startswith("4.") or not hasattr(cv2, "dnn"):
        return None
    return cv2.__version__


# ---------------------------------------------------------------------------- checks
def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if a.shape != b.shape:
        return math.inf
    denom = float(b.norm())
    return float((a - b).norm()) / (denom if denom > 0 else 1.0)


class RandomState:
    """The random state neocaffe's Dropout draws from, so that a twin can start from it and
    draw the same masks."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.state = torch.cuda.get_rng_state() if self.cuda else STATE.generator.get_state()

    def hand_to(self, twin: TwinSide) -> None:
        if self.cuda:
            torch.cuda.set_rng_state(self.state)
            twin.model.generator = None
        else:
            gen = torch.Generator()
            gen.set_state(self.state)
            twin.model.generator = gen


def _train_outcome(side, mode: str, steps: int) -> dict[str, torch.Tensor]:
    """Run ``steps`` calls from cleared diffs; the loss and parameter gradients (fwdbwd) or
    the parameter updates (solver) they produced."""
    before = {k: v.detach().clone() for k, v in side.params().items()}
    side.clear_diffs()
    for _ in range(steps):
        side.run()
    if mode == "fwdbwd":
        loss = (side.net.blobs["loss"].tensor if isinstance(side, CaffeSide) else side.loss)
        return {"loss": loss.detach().reshape(()), **{f"diff {k}": v.detach().clone()
                                                       for k, v in side.grads().items()}}
    return {f"update {k}": v.detach() - before[k] for k, v in side.params().items()}


def compare(case: Case, cside: CaffeSide, tside: TwinSide, device: torch.device,
            reference: Callable[[], TwinSide] | None = None) -> dict:
    """Run both sides from the same state and compare: every blob in forward modes, the loss
    and every parameter gradient for fwdbwd, every parameter update over two steps for the
    solver. Returns the worst relative error, where it is, and the verdict.

    Training results pass through max pooling, whose argmax flips at near-ties under float32
    rounding, so gradients may differ by ~1e-3 on deep conv nets. When the error exceeds
    TOLERANCE and ``reference()`` builds a float64 twin, the verdict is instead whether both
    sides are equally close to that float64 run: the worst error of each within 3x of the
    other's (plus TOLERANCE), or both below NEAR_TIE_NOISE (one side may just be luckier with
    its ties). A formula mistake, or one changed weight, gives errors of 1e-2 and more."""
    if case.mode in FORWARD_MODES:
        cside.run()
        with torch.no_grad():
            env = tside.model.blobs(tside.x)
        errs = {f"blob {n}": rel_err(b.tensor, env[n]) for n, b in cside.net.blobs.items()
                if n in env}
        where = max(errs, key=errs.get)
        return {"max_rel_err": errs[where], "where": where, "ok": errs[where] <= TOLERANCE}
    steps = 2 if case.mode == "solver" else 1
    rng = RandomState(device)
    ours = _train_outcome(cside, case.mode, steps)
    rng.hand_to(tside)
    theirs = _train_outcome(tside, case.mode, steps)
    tside.model.generator = None
    errs = {k: rel_err(v, theirs[k]) for k, v in ours.items() if k in theirs}
    where = max(errs, key=errs.get)
    out = {"max_rel_err": errs[where], "where": where, "ok": errs[where] <= TOLERANCE}
    if out["ok"] or reference is None:
        return out
    ref64 = reference()
    rng.hand_to(ref64)
    exact = _train_outcome(ref64, case.mode, steps)
    worst_c = max(rel_err(ours[k], exact[k]) for k in errs)
    worst_t = max(rel_err(theirs[k], exact[k]) for k in errs)
    ok = max(worst_c, worst_t) <= max(3 * min(worst_c, worst_t) + TOLERANCE, NEAR_TIE_NOISE)
    out.update(ok=ok, float64={"neocaffe_max_rel_err": worst_c, "twin_max_rel_err": worst_t})
    return out


# ---------------------------------------------------------------------------- running a case
@dataclass
class Settings:
    threads: list[int] = field(default_factory=lambda: [1, 2])
    repeats: int = 7
    heavy_repeats: int = 3
    warmup: int = 2
    heavy_warmup: int = 1
    #: seconds one timed sample should last at least (``inner`` calls per sample)
    sample_s: float = 0.2
    max_inner: int = 50
    memory: bool = True
    #: False: check and measure memory only (``run --memory-only``)
    timing: bool = True
    opencv: bool = True
    device: str = "cpu"
    #: neocaffe replays its passes as CUDA graphs (``Net.use_cuda_graph``; GPU only)
    cuda_graph: bool = False


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _spread(xs: list[float]) -> float:
    """Relative spread of samples: (max - min) / median."""
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m if m else 0.0


def build_case(case: Case, device: Device):
    """(param, reference caffe net with the shared weights, inputs) of a case."""
    train = case.mode in TRAIN_MODES
    param = (netdefs.train_param if train else netdefs.deploy_param)(case.net, case.batch)
    ref = caffe.Net(param, caffe.TRAIN if train else caffe.TEST)
    netdefs.init_weights(ref)
    inputs = netdefs.random_inputs(param, with_label=train)
    return param, ref, inputs


def run_case(case: Case, settings: Settings, log: Callable[[str], None] = print) -> dict:
    """Check, time and measure one case; returns its result record."""
    device = Device(settings.device)
    t_start = time.perf_counter()
    torch.set_num_threads(max(settings.threads))
    param, ref, inputs = build_case(case, device)
    cside = CaffeSide(case, param, ref, inputs, settings.cuda_graph)
    tside = TwinSide(case, param, ref, inputs, device.torch)
    check = compare(case, cside, tside, device.torch, reference=lambda: TwinSide(
        case, param, ref, inputs, device.torch, torch.float64))
    check["tolerance"] = TOLERANCE
    rec: dict = {"net": case.net, "batch": case.batch, "mode": case.mode,
                 "target": TARGETS[case.mode], "check": check,
                 "flops": flops.pass_flops(cside.net, case.mode)}
    f64 = check.get("float64")
    log(f"[{case.label}] check: max rel err {check['max_rel_err']:.2e} ({check['where']})"
        + (f"; vs float64: neocaffe {f64['neocaffe_max_rel_err']:.2e}, twin "
           f"{f64['twin_max_rel_err']:.2e}" if f64 else "")
        + f" {'OK' if check['ok'] else 'MISMATCH'}")
    fns = {"neocaffe": cside.run, "twin": tside.run}
    ocv = None
    if (settings.opencv and case.mode in FORWARD_MODES and case.net in OPENCV_NETS
            and settings.device == "cpu" and opencv_available()):
        with tempfile.TemporaryDirectory() as folder:
            ocv = OpenCVSide(param, ref, inputs, folder)
        out = ocv.run()
        cside.run()
        ocv_err = rel_err(torch.from_numpy(out.reshape(cside.net.blobs["prob"].shape)),
                          cside.net.blobs["prob"].tensor)
        rec["opencv_check"] = {"max_rel_err": ocv_err, "where": "prob"}
        fns["opencv"] = ocv.run
    repeats = settings.heavy_repeats if case.heavy else settings.repeats
    warmup = settings.heavy_warmup if case.heavy else settings.warmup
    rec["timings"] = []
    for n in settings.threads if settings.timing else ():
        torch.set_num_threads(n)
        if ocv is not None:
            import cv2

            cv2.setNumThreads(n)
        inner = _inner_count(fns, settings, device)
        cpu: dict[str, list[float]] = {}
        samples = interleaved_samples(fns, repeats=repeats, inner=inner,
                                      warmup=max(warmup - 1, 0), sync=device.sync,
                                      cpu_samples=cpu)
        t = {k: _median(v) for k, v in samples.items()}
        c = {k: _median(v) for k, v in cpu.items()}
        row = {"threads": n, "repeats": repeats, "inner": inner,
               "ms": {k: v * 1e3 for k, v in t.items()},
               "cpu_ms": {k: v * 1e3 for k, v in c.items()},
               "spread": {k: _spread(v) for k, v in samples.items()},
               "ratio": t["neocaffe"] / t["twin"],
               "cpu_ratio": c["neocaffe"] / c["twin"] if c["twin"] else math.inf,
               # the fastest sample of each side: other processes only ever add time
               "cpu_ratio_min": (min(cpu["neocaffe"]) / min(cpu["twin"]) if min(cpu["twin"])
                                 else math.inf),
               "samples_ms": {k: [x * 1e3 for x in v] for k, v in samples.items()},
               "cpu_samples_ms": {k: [x * 1e3 for x in v] for k, v in cpu.items()}}
        if "opencv" in t:
            row["ratio_vs_opencv"] = t["neocaffe"] / t["opencv"]
            row["cpu_ratio_vs_opencv"] = c["neocaffe"] / c["opencv"] if c["opencv"] else math.inf
        rec["timings"].append(row)
        log(f"[{case.label}] {n} thread(s): neocaffe {row['ms']['neocaffe']:.2f} ms, twin "
            f"{row['ms']['twin']:.2f} ms, ratio {row['ratio']:.3f} (CPU time "
            f"{row['cpu_ratio']:.3f}, fastest samples {row['cpu_ratio_min']:.3f}; target <= "
            f"{TARGETS[case.mode]:.2f})"
            + (f", opencv {row['ms']['opencv']:.2f} ms" if "opencv" in t else ""))
    del cside, tside, ocv, fns
    if settings.memory and case.mode != "fwdbwd":
        torch.set_num_threads(max(settings.threads))
        before: dict = {}
        peak_c, side = device.measure_peak(
            lambda: CaffeSide(case, param, ref, inputs, settings.cuda_graph),
            built=lambda s: before.update(held_by_class(s.net, s.solver)))
        held = held_by_class(side.net, side.solver)
        moved = in_place_report(side.net)
        del side
        peak_t, side = device.measure_peak(
            lambda: TwinSide(case, param, ref, inputs, device.torch))
        del side
        rec["memory"] = {"neocaffe_bytes": peak_c, "twin_bytes": peak_t,
                         "ratio": peak_c / peak_t if peak_t else math.inf,
                         "target": MEMORY_TARGET if case.mode == "solver" else None,
                         "neocaffe_held_by_class": held,
                         "neocaffe_held_before_by_class": before,
                         "in_place_moved": moved}
        log(f"[{case.label}] peak memory: neocaffe {peak_c / 2**20:.1f} MiB, twin "
            f"{peak_t / 2**20:.1f} MiB, ratio {rec['memory']['ratio']:.2f}")
    rec["wall_s"] = time.perf_counter() - t_start
    return rec


def _inner_count(fns: dict[str, Callable[[], None]], settings: Settings, device: Device) -> int:
    """Calls per timed sample: enough for ``sample_s`` seconds of the slowest side (each
    side runs once here, which doubles as a warm-up call)."""
    slowest = 0.0
    for fn in fns.values():
        if device.sync:
            device.sync()
        t0 = time.perf_counter()
        fn()
        if device.sync:
            device.sync()
        slowest = max(slowest, time.perf_counter() - t0)
    return max(1, min(settings.max_inner, round(settings.sample_s / max(slowest, 1e-6))))
