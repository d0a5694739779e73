"""``caffe export``: write a deploy net with its weights as a file that runs without neocaffe.

``caffe export -model deploy.prototxt [-weights w.caffemodel] -output net.onnx|net.pt2
[-batch N | -dynamic_batch] [-level N] [-stage s1,s2]`` traces the TEST net (``caffe.export``)
at the input blobs' shapes (``-batch`` replaces their first dimension; ``-dynamic_batch`` leaves
it open) and writes ONNX for a ``.onnx`` output, a PyTorch ExportedProgram
(``torch.export.load``) otherwise. It then runs the written file on random inputs (ONNX: when
ONNX Runtime is installed) and logs the largest difference from the net's own forward.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from caffe._common import LOG, init_log
from caffe.errors import CaffeError
from caffe.export import save
from caffe.layer import TEST
from caffe.tools.train import add_device_arguments, net_from_args

COMMAND = "export"
HELP = "export a deploy net and its weights to ONNX (.onnx) or a PyTorch program (.pt2)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="", help="the deploy net definition (prototxt)")
    parser.add_argument("--weights", default="", help="the trained weights (caffemodel/HDF5)")
    parser.add_argument("--output", default="", help="the file to write: .onnx or .pt2")
    parser.add_argument("--batch", type=int, default=0,
                        help="batch size of the exported program (default: the net's)")
    parser.add_argument("--dynamic-batch", "--dynamic_batch", action="store_true",
                        help="let the exported program take any batch size")
    add_device_arguments(parser)


def _run_written(path: str, inputs: list[np.ndarray]) -> list[np.ndarray] | None:
    """Outputs of the written file on ``inputs`` (None: no runtime here for an ONNX file)."""
    if path.endswith(".onnx"):
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = {i.name: x for i, x in zip(session.get_inputs(), inputs)}
        return session.run(None, feed)
    program = torch.export.load(path)
    with torch.no_grad():
        outputs = program.module()(*[torch.from_numpy(x) for x in inputs])
    return [t.numpy() for t in outputs]


def run(args: argparse.Namespace) -> int:
    init_log()
    if not args.output:
        raise CaffeError("Need an output file: caffe export -output net.onnx (or net.pt2)")
    if args.batch < 0:
        raise CaffeError(f"-batch must be positive, got {args.batch}")
    args.iterations = 1
    if args.gpu:
        LOG.warning("caffe export traces the net on the CPU; -gpu %s is ignored", args.gpu)
        args.gpu = ""
    net = net_from_args(args, "export", "export", TEST, args.weights)
    if args.batch:
        for name in net.inputs:
            shape = net.blobs[name].shape
            if shape:
                net.blobs[name].reshape(args.batch, *shape[1:])
        net.reshape()
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(net.blobs[n].shape).astype(np.float32) for n in net.inputs]
    save(net, args.output, inputs, args.dynamic_batch)
    LOG.info("Wrote %s: inputs %s, outputs %s", args.output,
             ", ".join(f"{n} {net.blobs[n].shape}" for n in net.inputs),
             ", ".join(f"{n} {net.blobs[n].shape}" for n in net.outputs))
    got = _run_written(args.output, inputs)
    if got is None:
        LOG.info("ONNX Runtime is not installed: the written file was not run")
        return 0
    for name, x in zip(net.inputs, inputs):
        net.blobs[name].data[...] = x
    expected = net.forward()
    worst = max((float(np.abs(g - expected[n]).max()) if g.size else 0.0)
                for g, n in zip(got, net.outputs)) if got else 0.0
    LOG.info("Checked on random inputs: largest difference from the net's forward %g", worst)
    return 0
