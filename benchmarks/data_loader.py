"""Data layer benchmark: JPEG-encoded 256x256 Datums in an LMDB with the CaffeNet transform
(crop 227, mirror, mean file), TRAIN phase.

1. Loader throughput: images/s of a net holding only the Data layer (batch 64), with 1 and 2
   decode workers (``CAFFE_DATA_WORKERS``, read by the layer at set-up).
2. Training: SGD solver steps (momentum 0.9) of CaffeNet fed (a) by that Data layer and (b) by
   an Input layer holding one fixed batch already in memory, timed interleaved; reports
   training images/s and the step ratio Data / in-memory (target: at most 1.05), and whether
   the loader outruns training.

    python -m benchmarks.data_loader [--quick] [--batch 8] [--workers 1 2] [--out NAME]

Results go to ``benchmarks/results/<out>.md`` and ``.json`` (default ``data_loader_cpu``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import io
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

import caffe
from benchmarks import netdefs, report
from benchmarks.timing import interleaved_samples
from caffe.data.db import open_writer
from caffe.proto import caffe_pb2

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
#: the issue's bound on step(Data) / step(in memory)
STEP_TARGET = 1.05
SOLVER_SETTINGS = {"base_lr": 0.001, "momentum": 0.9, "weight_decay": 5e-4}


@dataclass
class Options:
    """What to measure; the defaults are the full CaffeNet run."""

    images: int = 512
    size: int = 256
    crop: int = 227
    loader_batch: int = 64
    loader_batches: int = 20
    workers: list[int] = field(default_factory=lambda: [1, 2])
    net: str = "caffenet"  # a benchmarks/nets name, or "tiny" (for smoke tests)
    batch: int = 8
    train_workers: int | None = None  # decode workers while training; None: the default
    repeats: int = 10
    inner: int = 4
    warmup: int = 3
    gpu: bool = False  # run the nets on CUDA (batches staged on the device by the loader)
    compare_nice: list[int] = field(default_factory=list)  # more Data-fed sides at these nice


QUICK = {"images": 256, "loader_batches": 8, "repeats": 6, "inner": 3, "warmup": 2}


# ---------------------------------------------------------------------------- the database
def make_db(folder: str, n: int, size: int = 256) -> tuple[str, str]:
    """An LMDB of ``n`` JPEG-encoded ``size`` x ``size`` colour Datums and a flat mean file."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] * (256 // size)
    db = os.path.join(folder, "jpeg_lmdb")
    with open_writer(db, "lmdb") as w:
        for i in range(n):
            base = np.stack([yy, xx, (yy + xx) // 2], -1) + rng.integers(0, 40, (size, size, 3))
            buf = io.BytesIO()
            Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
            w.put("%08d" % i, caffe_pb2.Datum(data=buf.getvalue(), encoded=True,
                                              label=i % 10).SerializeToString())
    mean = caffe.io.array_to_blobproto(np.full((1, 3, size, size), 120.0, np.float32))
    mean_file = os.path.join(folder, "mean.binaryproto")
    with open(mean_file, "wb") as f:
        f.write(mean.SerializeToString())
    return db, mean_file


def data_layer(db: str, mean_file: str, batch: int, crop: int) -> caffe_pb2.LayerParameter:
    """A TRAIN Data layer with tops ``data`` and ``label`` and the CaffeNet transform."""
    layer = caffe_pb2.LayerParameter(name="data", type="Data", top=["data", "label"])
    layer.data_param.source, layer.data_param.batch_size = db, batch
    layer.data_param.backend = caffe_pb2.DataParameter.LMDB
    layer.transform_param.crop_size, layer.transform_param.mirror = crop, True
    layer.transform_param.mean_file = mean_file
    return layer


@contextlib.contextmanager
def environ(name: str, value: int | None) -> Iterator[None]:
    """Set the environment variable ``name`` inside (None: leave it)."""
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = str(value)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def decode_workers(workers: int | None) -> contextlib.AbstractContextManager[None]:
    """Set ``CAFFE_DATA_WORKERS`` for the Data layers set up inside (None: leave it)."""
    return environ("CAFFE_DATA_WORKERS", workers)


# ---------------------------------------------------------------------------- 1. the loader
def loader_rate(layer: caffe_pb2.LayerParameter, workers: int, batches: int) -> dict:
    """Images/s (wall and process CPU) of a net holding only ``layer``, after draining the
    batches prefetched during set-up, so that the producer's steady rate is measured."""
    param = caffe_pb2.NetParameter(name="loader")
    param.layer.add().CopyFrom(layer)
    with decode_workers(workers):
        net = caffe.Net(param, caffe.TRAIN)
    try:
        for _ in range(layer.data_param.prefetch + 1):
            net.forward()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(batches):
            net.forward()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        net.layers[0].close()
    images = batches * layer.data_param.batch_size
    return {"workers": workers, "images": images, "wall_s": wall, "cpu_s": cpu,
            "images_per_s": images / wall, "images_per_cpu_s": images / cpu}


# ---------------------------------------------------------------------------- 2. training
def tiny_train_param(batch: int, crop: int) -> caffe_pb2.NetParameter:
    """A small train net in the layout of ``netdefs.train_param``: data and label Inputs,
    conv-relu-pool-ip and SoftmaxWithLoss (for smoke tests)."""
    param = caffe_pb2.NetParameter(name="tiny_train")
    data = param.layer.add(name="data", type="Input", top=["data"])
    data.input_param.shape.add().dim.extend([batch, 3, crop, crop])
    label = param.layer.add(name="label_input", type="Input", top=["label"])
    label.input_param.shape.add().dim.append(batch)
    conv = param.layer.add(name="conv1", type="Convolution", bottom=["data"], top=["conv1"])
    conv.convolution_param.num_output = 8
    conv.convolution_param.kernel_size.append(4)
    conv.convolution_param.stride.append(2)
    param.layer.add(name="relu1", type="ReLU", bottom=["conv1"], top=["conv1"])
    pool = param.layer.add(name="pool1", type="Pooling", bottom=["conv1"], top=["pool1"])
    pool.pooling_param.pool = caffe_pb2.PoolingParameter.MAX
    pool.pooling_param.kernel_size, pool.pooling_param.stride = 2, 2
    ip = param.layer.add(name="fc", type="InnerProduct", bottom=["pool1"], top=["fc"])
    ip.inner_product_param.num_output = 10
    param.layer.add(name="loss", type="SoftmaxWithLoss", bottom=["fc", "label"], top=["loss"])
    return param


def train_param(opts: Options) -> caffe_pb2.NetParameter:
    if opts.net == "tiny":
        return tiny_train_param(opts.batch, opts.crop)
    return netdefs.train_param(opts.net, opts.batch)


def fed_by(train: caffe_pb2.NetParameter, layer: caffe_pb2.LayerParameter
           ) -> caffe_pb2.NetParameter:
    """``train`` with its ``data`` and ``label`` Inputs replaced by ``layer``."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(train)
    del out.layer[:]
    out.layer.add().CopyFrom(layer)
    for lp in train.layer:
        if not (lp.type == "Input" and set(lp.top) <= {"data", "label"}):
            out.layer.add().CopyFrom(lp)
    return out


def sgd_solver(train: caffe_pb2.NetParameter):
    sp = caffe_pb2.SolverParameter(type="SGD", lr_policy="fixed", display=0, max_iter=10 ** 9,
                                   **SOLVER_SETTINGS)
    sp.train_net_param.CopyFrom(train)
    return caffe.get_solver(sp)


class LoaderIdle:
    """A ``sync`` hook for :func:`interleaved_samples` (called before and after each sample):
    before a sample it waits until the Data layers' prefetch queues are full, so a loader's
    refill after its sample is not charged to the next sample."""

    def __init__(self, prefetchers: list, timeout: float = 30.0, cuda: bool = False) -> None:
        self.prefetchers = prefetchers
        self.cuda = cuda
        self.timeout = timeout
        self.calls = 0
        self.waited = 0.0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls % 2 == 0:  # the end of a sample: read the clock at once
            if self.cuda:
                torch.cuda.synchronize()
            return
        t0 = time.perf_counter()
        while (not all(p.queue_full for p in self.prefetchers)
               and time.perf_counter() - t0 < self.timeout):
            time.sleep(0.002)
        # let the decode thread finish the batch it starts after its put()
        time.sleep(0.01)
        self.waited += time.perf_counter() - t0


def training(train: caffe_pb2.NetParameter, layer: caffe_pb2.LayerParameter,
             opts: Options) -> dict:
    """Solver steps fed by ``layer`` vs by one batch already in memory, interleaved. With
    ``opts.compare_nice``, more Data-fed solvers whose loader threads run at those nice
    values take part in the same interleaving."""
    nices = {"data_layer": None, **{f"data_layer_nice{n}": n for n in opts.compare_nice}}
    fed = {}
    for name, nice in nices.items():
        with decode_workers(opts.train_workers), environ("CAFFE_DATA_NICE", nice):
            fed[name] = sgd_solver(fed_by(train, layer))
    solvers = {**fed, "in_memory": sgd_solver(train)}
    for solver in solvers.values():
        netdefs.init_weights(solver.net, seed=0)
    prefetchers = {name: solver.net.layers[0].prefetcher for name, solver in fed.items()}
    try:
        for solver in fed.values():
            solver.step(1)  # the first batch of "data_layer" is also the in-memory one
        for blob in ("data", "label"):
            solvers["in_memory"].net.blobs[blob].data[...] = fed["data_layer"].net.blobs[blob].data
        idle = LoaderIdle(list(prefetchers.values()), cuda=opts.gpu)
        before = {name: (p.served, p.waits, p.wait_s) for name, p in prefetchers.items()}
        cpu: dict[str, list[float]] = {}
        wall = interleaved_samples({name: functools.partial(solver.step, 1)
                                    for name, solver in solvers.items()},
                                   repeats=opts.repeats, inner=opts.inner, warmup=opts.warmup,
                                   sync=idle, cpu_samples=cpu)
        data_waits = {name: {"steps": p.served - before[name][0],
                             "waits": p.waits - before[name][1],
                             "wait_s": p.wait_s - before[name][2]}
                      for name, p in prefetchers.items()}
        loss = {name: float(solver.net.blobs["loss"].data) for name, solver in solvers.items()}
    finally:
        for solver in fed.values():
            solver.net.layers[0].close()
    sides = {}
    for name in wall:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        sides[name] = {"step_s": w, "cpu_step_s": c, "images_per_s": opts.batch / w,
                       "spread": (max(wall[name]) - min(wall[name])) / w,
                       "wall_samples": wall[name], "cpu_samples": cpu[name],
                       "final_loss": loss[name]}
    mem = sides["in_memory"]
    ratios = {name: {"wall": sides[name]["step_s"] / mem["step_s"],
                     "cpu": sides[name]["cpu_step_s"] / mem["cpu_step_s"],
                     # best samples: robust to load bursts from other processes
                     "wall_best": min(wall[name]) / min(wall["in_memory"])} for name in fed}
    return {"sides": sides, "ratio_wall": ratios["data_layer"]["wall"],
            "ratio_cpu": ratios["data_layer"]["cpu"], "ratios": ratios,
            "idle_wait_s": idle.waited, "data_waits": data_waits["data_layer"],
            "data_waits_by_side": data_waits}


# ---------------------------------------------------------------------------- running
def run(opts: Options, log: Callable[[str], None] = print) -> dict:
    """Measure everything; returns the results (see :func:`write`)."""
    if opts.gpu:
        caffe.set_mode_gpu()
    machine = report.machine("cuda" if opts.gpu else "cpu")
    machine["nproc"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count()
    machine["torch_threads"] = torch.get_num_threads()
    from caffe.data.prefetch import DEFAULT_NICE
    from caffe.data.prefetch import decode_workers as default_workers

    results: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                     "options": asdict(opts), "machine": machine, "solver": SOLVER_SETTINGS,
                     "target_step_ratio": STEP_TARGET,
                     "default_train_workers": default_workers(True),
                     "loader_nice": int(os.environ.get("CAFFE_DATA_NICE") or DEFAULT_NICE)}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        db, mean_file = make_db(folder, opts.images, opts.size)
        results["loader"] = []
        for w in opts.workers:
            r = loader_rate(data_layer(db, mean_file, opts.loader_batch, opts.crop), w,
                            opts.loader_batches)
            results["loader"].append(r)
            log(f"loader, {w} decode worker(s): {r['images_per_s']:,.0f} images/s "
                f"({r['images_per_cpu_s']:,.0f} per CPU-second)")
        train = training(train_param(opts), data_layer(db, mean_file, opts.batch, opts.crop),
                         opts)
    results["training"] = train
    for name, side in train["sides"].items():
        log(f"training, {name}: {side['step_s'] * 1e3:,.1f} ms/step wall "
            f"({side['images_per_s']:,.1f} images/s), {side['cpu_step_s'] * 1e3:,.1f} ms CPU")
    for name, r in train["ratios"].items():
        log(f"step ratio {name} / in-memory: wall {r['wall']:.3f} (best samples "
            f"{r['wall_best']:.3f}), CPU {r['cpu']:.3f} (target <= {STEP_TARGET})")
    log(waits_line(train["data_waits"]))
    train_rate = train["sides"]["in_memory"]["images_per_s"]
    results["verdict"] = {
        "loader_faster_than_training": {
            r["workers"]: r["images_per_s"] > train_rate for r in results["loader"]},
        "step_ratio_wall_ok": train["ratio_wall"] <= STEP_TARGET,
        "step_ratio_cpu_ok": train["ratio_cpu"] <= STEP_TARGET,
    }
    machine["loadavg_end"] = list(os.getloadavg())
    results["elapsed_s"] = time.perf_counter() - start
    return results


def waits_line(w: dict) -> str:
    return (f"the net waited on data in {w['waits']} of {w['steps']} Data-fed steps "
            f"(warm-up included), {w['wait_s'] * 1e3:,.1f} ms in all")


def markdown(results: dict) -> str:
    opts, m, train = results["options"], results["machine"], results["training"]
    net = "CaffeNet (benchmarks/nets/caffenet.prototxt, train variant)" \
        if opts["net"] == "caffenet" else opts["net"]
    lines = [
        f"# Data layer vs the training step it feeds ({'GPU' if opts.get('gpu') else 'CPU'})",
        "",
        f"Command: `{results.get('command', '')}` ({results['elapsed_s']:.0f} s). "
        f"Date: {results['date']}.", "",
        "## Machine", "",
        f"- CPU: {m['cpu']} (nproc {m['nproc']}, {m['logical_cpus']} logical CPUs; "
        f"{m['cpu_flags']}), memory {m['memory']}; {m['os']}",
        *([f"- GPU: {m['gpu']}"] if m.get("gpu") else []),
        f"- Python {m['python']}, torch {m['torch']} ({m['torch_threads']} intra-op threads), "
        f"numpy {m['numpy']}",
        f"- Load average at start {[round(x, 2) for x in m['loadavg_start']]}, at end "
        f"{[round(x, 2) for x in m['loadavg_end']]}", "",
        "## Setup", "",
        f"- LMDB of {opts['images']} JPEG-encoded (quality 90) {opts['size']}x{opts['size']} "
        f"colour Datums; transform crop {opts['crop']}, mirror, mean file "
        f"({opts['size']}x{opts['size']}); TRAIN phase.",
        f"- Loader: a net holding only the Data layer, batch {opts['loader_batch']}, "
        f"{opts['loader_batches']} timed batches after draining the prefetched ones; decode "
        "workers set with `CAFFE_DATA_WORKERS`. CPU time counts all threads of the process.",
        f"- Training: {net}, batch {opts['batch']}, `solver.step(1)` of an SGD solver "
        f"(lr {results['solver']['base_lr']:g}, momentum {results['solver']['momentum']:g}, "
        f"weight_decay {results['solver']['weight_decay']:g}); (a) fed by the Data layer "
        f"(decode workers: {opts['train_workers'] or results['default_train_workers']}, "
        f"prefetch 4, loader threads at nice +{results.get('loader_nice', 0)}), (b) data "
        "and label Inputs holding the Data layer's first batch. Same "
        "seeded weights. Timed interleaved (a b a b ...): "
        f"{opts['repeats']} samples of {opts['inner']} steps each after {opts['warmup']} "
        "warm-up steps; medians. Before each sample the benchmark waits until the prefetch "
        "queue is full, so the loader's refill is charged to the Data side only (in steady "
        "state, when the loader outruns training, the queue is full at every step too). "
        "Process CPU time includes the loader's background decode threads.", "",
        "## Loader throughput", "",
        "| decode workers | images/s (wall) | images per CPU-second |", "|---:|---:|---:|",
    ]
    for r in results["loader"]:
        lines.append(f"| {r['workers']} | {r['images_per_s']:,.0f} | "
                     f"{r['images_per_cpu_s']:,.0f} |")
    lines += ["", "## Training step", "",
              "| feed | ms/step (wall) | images/s (wall) | spread | ms/step (CPU) | "
              "final loss |", "|---|---:|---:|---:|---:|---:|"]
    for name, s in train["sides"].items():
        lines.append(f"| {name.replace('_', ' ')} | {s['step_s'] * 1e3:,.1f} | "
                     f"{s['images_per_s']:,.1f} | {s['spread']:.2f} | "
                     f"{s['cpu_step_s'] * 1e3:,.1f} | {s['final_loss']:.4g} |")
    v = results["verdict"]
    faster = ", ".join(f"{w} worker(s): {'yes' if ok else 'NO'}"
                       for w, ok in v["loader_faster_than_training"].items())
    lines += ["",
              f"Step ratio Data / in-memory: **{train['ratio_wall']:.3f}** wall, "
              f"**{train['ratio_cpu']:.3f}** CPU (target <= {results['target_step_ratio']}: "
              f"wall {'met' if v['step_ratio_wall_ok'] else 'NOT met'}, CPU "
              f"{'met' if v['step_ratio_cpu_ok'] else 'NOT met'}); ratio of the best samples "
              f"{train['ratios']['data_layer']['wall_best']:.3f}.", "",
              f"Loader faster than training ({train['sides']['in_memory']['images_per_s']:,.1f}"
              f" images/s): {faster}.", "",
              f"Waiting on data: {waits_line(train['data_waits'])}."]
    others = {k: r for k, r in train.get("ratios", {}).items() if k != "data_layer"}
    if others:
        lines += ["", "Same run, Data-fed solvers whose loader threads run at other nice values "
                  "(`--compare-nice`; nice 0 is the loader before this change):", ""]
        lines += [f"- {name.replace('_', ' ')}: step ratio **{r['wall']:.3f}** wall, "
                  f"**{r['cpu']:.3f}** CPU, best samples {r['wall_best']:.3f}"
                  for name, r in others.items()]
    if results.get("note"):
        lines += ["", f"Note: {results['note']}"]
    return "\n".join(lines) + "\n"


def write(results: dict, folder: str, name: str) -> tuple[str, str]:
    os.makedirs(folder, exist_ok=True)
    paths = (os.path.join(folder, name + ".json"), os.path.join(folder, name + ".md"))
    with open(paths[0], "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(paths[1], "w") as f:
        f.write(markdown(results))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and samples")
    parser.add_argument("--images", type=int)
    parser.add_argument("--batch", type=int, help="training batch (default 8)")
    parser.add_argument("--workers", type=int, nargs="+", help="loader decode workers")
    parser.add_argument("--train-workers", type=int, help="decode workers while training")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--inner", type=int)
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--gpu", action="store_true", help="run the nets on CUDA")
    parser.add_argument("--compare-nice", type=int, nargs="+",
                        help="also time Data-fed solvers whose loaders run at these nice values")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default="data_loader_cpu", help="results file name")
    args = parser.parse_args(argv)
    opts = Options(**(QUICK if args.quick else {}))
    for key in ("images", "batch", "workers", "train_workers", "repeats", "inner", "gpu",
                "compare_nice"):
        if getattr(args, key) is not None:
            setattr(opts, key, getattr(args, key))
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run(opts)
    results["command"] = "python -m benchmarks.data_loader " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    results["note"] = args.note
    for path in write(results, RESULTS, args.out):
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
