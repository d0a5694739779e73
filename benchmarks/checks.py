"""Extra suite entries: the ``caffe time`` consistency check and the executor-overhead chain."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile

from benchmarks import executor_overhead, netdefs
from caffe.proto import files

_LAYER = re.compile(r"\] *(.+?)\t(forward|backward): ([0-9.eE+-]+) ms\.")
_PASS = re.compile(r"Average (Forward|Backward) pass: ([0-9.eE+-]+) ms\.")


def parse_caffe_time(log: str) -> dict:
    """Per-layer forward/backward sums and the whole passes from a ``caffe time`` log."""
    sums = {"forward": 0.0, "backward": 0.0}
    for _, kind, ms in _LAYER.findall(log):
        sums[kind] += float(ms)
    passes = {k.lower(): float(v) for k, v in _PASS.findall(log)}
    if "forward" not in passes:
        raise ValueError(f"no 'Average Forward pass' line in the caffe time log:\n{log[-2000:]}")
    total = passes["forward"] + passes.get("backward", 0.0)
    layers = sums["forward"] + sums["backward"]
    return {"layer_forward_ms": sums["forward"], "forward_ms": passes["forward"],
            "layer_backward_ms": sums["backward"], "backward_ms": passes.get("backward", 0.0),
            "unaccounted": (total - layers) / total if total else 0.0}


def caffe_time(net: str, batch: int, iterations: int, device: str = "cpu") -> dict:
    """Run ``caffe time`` (TRAIN phase) on the train variant of ``net`` in a subprocess and
    compare the per-layer times with the measured passes."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"{net}_train.prototxt")
        files.write_text(path, netdefs.train_param(net, batch))
        cmd = [sys.executable, "-m", "caffe", "time", "--model", path, "--iterations",
               str(iterations)]
        if device == "cuda":
            cmd += ["--gpu", "0"]
        env = dict(os.environ, GLOG_minloglevel="0")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"caffe time failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return {"net": net, "batch": batch, "iterations": iterations,
            **parse_caffe_time(proc.stderr + proc.stdout)}


def executor(threads: int, layers: int = 100, repeats: int = 15) -> dict:
    """The executor-overhead chain benchmark (its printout is kept quiet)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return executor_overhead.main(["--layers", str(layers), "--threads", str(threads),
                                       "--repeats", str(repeats)])
