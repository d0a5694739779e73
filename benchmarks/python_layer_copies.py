"""Bytes copied between host and device per iteration by Python layers: a NumPy layer (Caffe's
behaviour: every ``.data``/``.diff`` access syncs through the host) versus the same layer with
``torch_blobs = True`` (device tensors, no copies).

    python -m benchmarks.python_layer_copies [--device cpu|cuda] [--iters 10]

On the CPU both are zero (NumPy views share the tensors' memory); the difference shows in GPU
mode.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
from google.protobuf import text_format

import caffe
from caffe.blob import TRANSFERS
from caffe.proto import caffe_pb2

LAYERS = '''
import caffe


class NumpyScale(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 2 * top[0].diff


class TorchScale(NumpyScale):
    torch_blobs = True
'''


def net_text(layer: str, n: int) -> str:
    lines = ["force_backward: true",
             'layer { name: "in" type: "Input" top: "x0" input_param { shape { dim: 64 '
             'dim: 3 dim: 64 dim: 64 } } }']
    for i in range(n):
        lines.append(f'layer {{ name: "s{i}" type: "Python" bottom: "x{i}" top: "x{i + 1}" '
                     f'python_param {{ module: "copy_bench_layers" layer: "{layer}" }} }}')
    lines.append(f'layer {{ name: "conv" type: "Convolution" bottom: "x{n}" top: "y" '
                 'convolution_param { num_output: 8 kernel_size: 3 } }')
    return "\n".join(lines)


def measure(layer: str, n: int, iters: int) -> float:
    net = caffe.Net(text_format.Parse(net_text(layer, n), caffe_pb2.NetParameter()),
                    caffe.TRAIN)
    net.blobs["x0"].data[...] = np.random.default_rng(0).standard_normal(net.blobs["x0"].shape)
    net._forward()
    net._backward()
    TRANSFERS.reset()
    for _ in range(iters):
        net._forward()
        net.blobs["y"].diff_tensor.fill_(1.0)
        net._backward()
    return (TRANSFERS.host_to_device + TRANSFERS.device_to_host) / iters


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args(argv)
    folder = tempfile.mkdtemp()
    with open(os.path.join(folder, "copy_bench_layers.py"), "w") as f:
        f.write(LAYERS)
    sys.path.insert(0, folder)
    if args.device == "cuda":
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    res = {name: measure(name, args.layers, args.iters) for name in ("NumpyScale", "TorchScale")}
    blob = 64 * 3 * 64 * 64 * 4
    print(f"{args.layers} Python layers on a 64x3x64x64 float32 blob ({blob / 2**20:.1f} MiB), "
          f"{args.device}, forward+backward")
    for name, b in res.items():
        print(f"  {name:10s}: {b / 2**20:8.2f} MiB copied per iteration "
              f"({b / blob:.1f} blob sizes)")
    return res


if __name__ == "__main__":
    main()
