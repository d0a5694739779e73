"""Results of a suite run: the machine description, and the Markdown and JSON files."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys

import numpy as np
import torch

from benchmarks.flops import fp32_peak
from caffe.allocator import retain_freed_memory

METHOD = """\
- Each case builds the net from its prototxt in neocaffe and as a native PyTorch twin
  (`benchmarks/twin.py`: plain `torch.nn.functional` calls per layer, autograd backward,
  `torch.optim.SGD`), both with the same seeded random weights, and checks they agree
  (relative L2 error <= {tol:g}: every blob for forward, loss and every parameter gradient
  for forward+backward, every parameter update over two solver steps, with the same Dropout
  masks; above it, both are compared with a float64 run of the twin, see Checks).
- Timing: A B [C] A B [C] ... rounds; each sample is `inner` back-to-back calls; the table
  gives the median over `repeats` samples. `spread` = (max - min) / median of a side's
  samples, a noise indicator. Ratio = neocaffe / twin (lower is better).
- forward: TEST net, `net.forward()` (which returns the outputs as NumPy arrays) vs the twin
  under `torch.no_grad()` followed by `.cpu()` of its output (the same host copy; on CUDA it
  also waits for the device, as `net.forward()` must). fwdbwd: TRAIN net,
  `net.forward_backward()` vs `loss.backward()` (both accumulate parameter gradients).
  solver: `solver.step(1)` (SGD, lr {lr:g}, momentum {mom:g}, weight_decay {wd:g}) vs
  `zero_grad(); loss.backward(); opt.step()`. infer_b1: forward at batch 1. OpenCV DNN reads
  the same deploy prototxt and a caffemodel written by neocaffe.
- Peak memory: high-water mark of bytes held by live torch tensor storages created while the
  side is built and run (a TorchDispatchMode that adds each new output storage and subtracts
  it when the storage is freed; `benchmarks/memory.py`). It counts parameters, diffs/grads,
  solver history/momentum, activations and temporaries alike for both sides, and excludes
  Python objects, allocator caches and oneDNN/MKL private workspaces. Measured at the largest
  thread count, over the second call after building (on CUDA:
  `torch.cuda.max_memory_allocated`)."""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return ""
    flags = re.search(r"^flags\s*:(.*)$", text, re.M)
    have = set(flags.group(1).split()) if flags else set()
    return " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
                    if f in have)


def code_state() -> dict:
    """The commit measured, and the files under caffe/ that differ from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "modified": git("status", "--porcelain", "--", "caffe").splitlines()}


def _throughput(results: dict) -> list[str]:
    """Images per second of both sides and neocaffe's share of the card's float32 peak."""
    peak = results["machine"].get("fp32_peak_flops")
    out = ["", "## Throughput", "",
           "Images per second (batch / median wall time). `FLOP/s` counts the multiply-adds of "
           "Convolution, Deconvolution and InnerProduct (x3 for a training pass; "
           "`benchmarks/flops.py`); `% of peak` divides it by the card's dense float32 peak "
           f"({peak / 1e12:.1f} TFLOP/s, datasheet)." if peak else
           "Images per second (batch / median wall time); the card's peak is not known.", "",
           "| net | batch | mode | neocaffe img/s | twin img/s | neocaffe TFLOP/s | % of peak |",
           "|---|---|---|---|---|---|---|"]
    for r in results["cases"]:
        for t in r.get("timings", []):
            s_nc, s_tw = t["ms"]["neocaffe"] / 1e3, t["ms"]["twin"] / 1e3
            rate = r.get("flops", 0) / s_nc
            share = f"{100 * rate / peak:.1f}" if peak else ""
            out.append(f"| {r['net']} | {r['batch']} | {r['mode']} | {r['batch'] / s_nc:.0f} | "
                       f"{r['batch'] / s_tw:.0f} | {rate / 1e12:.2f} | {share} |")
    return out


def machine(device: str) -> dict:
    """What the numbers were measured on."""
    info = {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "memory": _mem_total(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_backends": {"mkl": torch.backends.mkl.is_available(),
                           "mkldnn": torch.backends.mkldnn.is_available(),
                           "openmp": torch.backends.openmp.is_available()},
        "device": device,
        "loadavg_start": list(os.getloadavg()),
    }
    try:
        import cv2

        info["opencv"] = cv2.__version__
    except ImportError:
        info["opencv"] = None
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["fp32_peak_flops"] = fp32_peak()
    return info


def add_malloc_argument(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--malloc", default="retain", choices=("retain", "default"),
                    help="retain (default): glibc keeps freed memory for reuse, for both "
                         "sides, as the caffe command runs (caffe/allocator.py); default: the "
                         "C library's own settings, under which page faults follow the "
                         "allocation history of the process")


def host_allocator(choice: str) -> str:
    """Apply ``--malloc`` to this process (both sides of every case); returns a description
    for the results' machine section."""
    if choice == "retain" and retain_freed_memory():
        return "glibc malloc keeping freed memory (caffe.allocator, as the caffe command runs)"
    return "the C library's default malloc settings"


def write_json(path: str, results: dict) -> None:
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=str)


def _ok(value: float, target: float | None) -> str:
    if target is None:
        return ""
    return "yes" if value <= target else "**no**"


def _mib(b: float) -> str:
    return f"{b / 2**20:.1f}"


def _held_columns(held: dict | None) -> list[str] | None:
    """MiB per blob-class column of the memory table (input, blob data, blob diff, param data,
    param diff, solver history, layer buffers, total) from a ``held_by_class`` record."""
    if held is None:
        return None

    def get(k: str) -> float:
        return held.get(k, {}).get("bytes", 0)

    buffers = sum(v["bytes"] for k, v in held.items() if k.startswith("layer buffers"))
    total = sum(v["bytes"] for v in held.values())
    return [_mib(x) for x in (get("input data") + get("input diff"), get("blob data"),
                              get("blob diff"), get("param data"), get("param diff"),
                              get("solver history"), buffers, total)]


def markdown(results: dict) -> str:
    """The results as a Markdown document."""
    m = results["machine"]
    cfg = results["settings"]
    out = [f"# neocaffe vs native PyTorch: {results['tag']}", "",
           f"Command: `{results['command']}` ({results['wall_s']:.0f} s). "
           f"Date: {results['date']}.", "", "## Machine", "",
           f"- CPU: {m['cpu']} ({m['logical_cpus']} logical CPUs; {m['cpu_flags']}), "
           f"memory {m['memory']}; {m['os']}",
           f"- Python {m['python']}, torch {m['torch']} (MKL {m['torch_backends']['mkl']}, "
           f"oneDNN {m['torch_backends']['mkldnn']}), numpy {m['numpy']}, OpenCV "
           f"{m['opencv'] or 'not installed'}; device {m['device']}"
           + (f" ({m['gpu']})" if m.get("gpu") else ""),
           f"- Load average at start {m['loadavg_start']}, at end {m.get('loadavg_end')}",
           ]
    if m.get("malloc"):
        out += [f"- Host allocator: {m['malloc']}"]
    code = results.get("code")
    if code:
        out += [f"- neocaffe at commit {code['commit']}"
                + (f" plus {len(code['modified'])} changed files under caffe/ (listed in the "
                   "JSON)" if code["modified"] else "")]
    if results.get("note"):
        out += [f"- Note: {results['note']}"]
    out += ["", "## Method", "", results["method"], "",
            f"Settings: threads {cfg['threads']}, repeats {cfg['repeats']} "
            f"({cfg['heavy_repeats']} for the heavy nets), warm-up {cfg['warmup']} "
            f"({cfg['heavy_warmup']}), samples of >= {cfg['sample_s']} s.", ""]
    timed = any(r.get("timings") for r in results["cases"])
    out += ["## Time", "", "No timing in this run (`run --memory-only`)."] if not timed else [
            "## Time", "",
            "Wall-clock medians in ms. `CPU ratio` is the same ratio of medians in process "
            "CPU time (all threads of the process), which other processes' load inflates far "
            "less; `min` is the ratio of each side's fastest CPU-time sample. `met` judges the "
            "median CPU ratio on the CPU (the wall ratio on CUDA). The OpenCV columns give its "
            "wall time and neocaffe / OpenCV in wall and CPU time.", "",
            "| net | batch | mode | threads | neocaffe ms | twin ms | ratio | CPU ratio | min | "
            "target | met | spread (nc / twin) | OpenCV ms | nc / OpenCV | nc / OpenCV CPU |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    cuda = results["machine"]["device"] == "cuda"
    for r in results["cases"]:
        for t in r.get("timings", []):
            ms = t["ms"]
            ocv = (f"{ms['opencv']:.2f} | {t['ratio_vs_opencv']:.2f} | "
                   f"{t['cpu_ratio_vs_opencv']:.2f}" if "opencv" in ms else " | | ")
            judged = t["ratio"] if cuda else t["cpu_ratio"]
            out.append(
                f"| {r['net']} | {r['batch']} | {r['mode']} | {t['threads']} | "
                f"{ms['neocaffe']:.2f} | {ms['twin']:.2f} | {t['ratio']:.3f} | "
                f"{t['cpu_ratio']:.3f} | {t.get('cpu_ratio_min', math.nan):.3f} | "
                f"{r['target']:.2f} | {_ok(judged, r['target'])} | "
                f"{t['spread']['neocaffe']:.2f} / {t['spread']['twin']:.2f} | {ocv} |")
    if cuda:
        out += _throughput(results)
    mem = [r for r in results["cases"] if "memory" in r]
    if mem:
        out += ["", "## Peak memory", "",
                "| net | batch | mode | neocaffe MiB | twin MiB | ratio | target | met |",
                "|---|---|---|---|---|---|---|---|"]
        for r in mem:
            mm = r["memory"]
            tgt = mm["target"]
            out.append(f"| {r['net']} | {r['batch']} | {r['mode']} | "
                       f"{_mib(mm['neocaffe_bytes'])} | {_mib(mm['twin_bytes'])} | "
                       f"{mm['ratio']:.2f} | {tgt if tgt else '-'} | {_ok(mm['ratio'], tgt)} |")
        out += ["", "### Bytes neocaffe holds by blob class (MiB), built / after the measured call",
                "",
                "Each storage counted once, in the first class that reaches it; "
                "`layer buffers` are tensors layers keep between passes (by layer type in "
                "the JSON). Each cell: when the side is built, before its first call / after "
                "the measured (second) call. `in place, moved` counts in-place layers whose "
                "forward replaced the blob's storage (a new full-size tensor every pass; `kept`: "
                "the layer keeps the old storage as its saved input for backward).", "",
                "| net | batch | mode | input | blob data | blob diff | param data | "
                "param diff | solver history | layer buffers | total | peak | in place, moved |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in mem:
            before = _held_columns(r["memory"].get("neocaffe_held_before_by_class"))
            cols = _held_columns(r["memory"]["neocaffe_held_by_class"])
            if before is not None:
                cols = [f"{b} / {a}" for b, a in zip(before, cols)]
            moved = r["memory"]["in_place_moved"]
            kept = sum(bool(x.get("kept_for_backward")) for x in moved)
            kinds = ", ".join(sorted({x["type"] for x in moved}))
            moved_txt = "0"
            if moved:
                moved_txt = f"{len(moved)} ({kinds}; {kept} kept)" if kept else \
                    f"{len(moved)} ({kinds})"
            out.append(f"| {r['net']} | {r['batch']} | {r['mode']} | {' | '.join(cols)} | "
                       f"{_mib(r['memory']['neocaffe_bytes'])} | {moved_txt} |")
    out += ["", "## Checks (neocaffe vs twin, and OpenCV vs neocaffe)", "",
            "Relative L2 errors. Where neocaffe and the twin differ by more than the tolerance "
            "(training through max pooling, whose argmax flips at float32 near-ties), both are "
            "compared with a float64 run of the twin and agree when the worst error of each is "
            "within 3x of the other's, or both are below 5e-3 (near-tie noise).", "",
            "| net | batch | mode | max rel err | where | vs float64 (nc / twin) | ok | "
            "OpenCV rel err |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results["cases"]:
        c = r["check"]
        ocv = r.get("opencv_check", {}).get("max_rel_err")
        f64 = c.get("float64")
        f64_txt = (f"{f64['neocaffe_max_rel_err']:.1e} / {f64['twin_max_rel_err']:.1e}"
                   if f64 else "")
        out.append(f"| {r['net']} | {r['batch']} | {r['mode']} | {c['max_rel_err']:.1e} | "
                   f"{c['where']} | {f64_txt} | {'yes' if c['ok'] else '**no**'} | "
                   f"{'' if ocv is None else f'{ocv:.1e}'} |")
    ct = results.get("caffe_time")
    if ct:
        out += ["", "## `caffe time`: per-layer times against the measured passes", "",
                "| net | batch | iterations | sum of layer fwd ms | Average Forward pass ms | "
                "sum of layer bwd ms | Average Backward pass ms | unaccounted |",
                "|---|---|---|---|---|---|---|---|"]
        for r in ct:
            out.append(f"| {r['net']} | {r['batch']} | {r['iterations']} | "
                       f"{r['layer_forward_ms']:.2f} | {r['forward_ms']:.2f} | "
                       f"{r['layer_backward_ms']:.2f} | {r['backward_ms']:.2f} | "
                       f"{r['unaccounted'] * 100:.1f} % |")
    ex = results.get("executor_overhead")
    if ex:
        out += ["", "## Executor overhead (`benchmarks/executor_overhead.py`)", "",
                "| threads | layers | twin fwd+bwd us | neocaffe fwd+bwd us | overhead/layer "
                "fwd+bwd us | overhead/layer fwd us | Python layer - built-in us |",
                "|---|---|---|---|---|---|---|"]
        for r in ex:
            out.append(f"| {r['threads']} | {r['layers']} | {r['twin_fwd_bwd_us']:.1f} | "
                       f"{r['caffe_fwd_bwd_us']:.1f} | "
                       f"{r['overhead_per_layer_fwd_bwd_us']:.2f} | "
                       f"{r['overhead_per_layer_fwd_us']:.2f} | "
                       f"{r['python_vs_builtin_fwd_per_layer_us']:.2f} |")
    return "\n".join(out) + "\n"
