"""Executor overhead: a chain of N tiny layers, forward + backward, through caffe.Net versus the
same torch ops called in a plain Python loop, in the same run.

Reports the per-layer overhead in microseconds (target: <= 10 us above the raw op cost) and the
extra cost of a Python layer's forward over a built-in layer doing the same work (target:
<= 10 us).

    python -m benchmarks.executor_overhead [--layers 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch

import caffe
from benchmarks.timing import interleaved

PY_LAYER = '''
import caffe, torch

class TorchReLU(caffe.Layer):
    """y = max(x, 0) with torch ops (a user layer doing a built-in's work)."""

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].tensor = torch.relu(bottom[0].tensor)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff_tensor = top[0].diff_tensor * (bottom[0].tensor > 0)
'''


def chain(n: int, layer: str) -> str:
    lines = ['name: "chain" force_backward: true',
             'layer { name: "in" type: "Input" top: "l0" input_param { shape { dim: 4 dim: 16 }'
             ' } }']
    for i in range(n):
        if layer == "python":
            body = 'type: "Python" python_param { module: "bench_pylayer" layer: "TorchReLU" }'
        else:
            body = 'type: "ReLU"'
        lines.append(f'layer {{ name: "r{i}" {body} bottom: "l{i}" top: "l{i + 1}" }}')
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.layers
    folder = tempfile.mkdtemp()
    with open(os.path.join(folder, "bench_pylayer.py"), "w") as f:
        f.write(PY_LAYER)
    sys.path.insert(0, folder)
    nets = {}
    for kind in ("builtin", "python"):
        path = os.path.join(folder, f"{kind}.prototxt")
        with open(path, "w") as f:
            f.write(chain(n, kind))
        net = caffe.Net(path, caffe.TRAIN)
        net.blobs["l0"].data[...] = torch.randn(4, 16).numpy()
        net.blobs[f"l{n}"].diff[...] = 1.0
        nets[kind] = net

    x0 = torch.randn(4, 16)
    dtop = torch.ones(4, 16)

    def twin_fb():
        xs = [x0]
        for _ in range(n):
            xs.append(torch.relu(xs[-1]))
        d = dtop
        for i in range(n, 0, -1):
            d = d * (xs[i - 1] > 0)

    def twin_f():
        x = x0
        for _ in range(n):
            x = torch.relu(x)

    def net_fb(kind):
        def run():
            nets[kind]._forward()
            nets[kind]._backward()
        return run

    def net_f(kind):
        return lambda: nets[kind]._forward()

    t = interleaved({"twin_fb": twin_fb, "caffe_fb": net_fb("builtin"),
                     "twin_f": twin_f, "caffe_f": net_f("builtin"), "python_f": net_f("python")},
                    repeats=args.repeats)
    res = {
        "layers": n, "threads": args.threads,
        "twin_fwd_bwd_us": t["twin_fb"] * 1e6, "caffe_fwd_bwd_us": t["caffe_fb"] * 1e6,
        "overhead_per_layer_fwd_bwd_us": (t["caffe_fb"] - t["twin_fb"]) / n * 1e6,
        "overhead_per_layer_fwd_us": (t["caffe_f"] - t["twin_f"]) / n * 1e6,
        "python_vs_builtin_fwd_per_layer_us": (t["python_f"] - t["caffe_f"]) / n * 1e6,
    }
    print(f"chain of {n} ReLU layers (4x16), {args.threads} thread(s); medians of "
          f"{args.repeats} interleaved rounds")
    print(f"  native torch loop, fwd+bwd : {res['twin_fwd_bwd_us']:9.1f} us")
    print(f"  caffe.Net,         fwd+bwd : {res['caffe_fwd_bwd_us']:9.1f} us")
    print(f"  overhead per layer fwd+bwd : {res['overhead_per_layer_fwd_bwd_us']:9.2f} us "
          "(target <= 10)")
    print(f"  overhead per layer fwd     : {res['overhead_per_layer_fwd_us']:9.2f} us")
    print(f"  Python layer fwd - built-in: {res['python_vs_builtin_fwd_per_layer_us']:9.2f} us "
          "per layer (target <= 10)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
