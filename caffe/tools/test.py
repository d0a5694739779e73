"""``caffe test``: score a trained model (Caffe's ``caffe test``).

``caffe test -model M -weights W [-iterations 50] [-gpu ids] [-level N] [-stage s1,s2]``
builds the net in the TEST phase, runs ``iterations`` forward passes, logs every output of
every batch (``Batch i, name = value``) and then the mean of each output, with its weighted
loss for loss outputs. The model's folder is put on ``sys.path`` for Python layer modules.
"""

from __future__ import annotations

import argparse

import torch

from caffe._common import LOG, init_log
from caffe.errors import CaffeError
from caffe.layer import TEST
from caffe.tools.train import add_device_arguments, net_from_args

COMMAND = "test"
HELP = "score a model: mean outputs over a number of test batches"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="", help="the net definition (prototxt)")
    parser.add_argument("--weights", default="", help="the trained weights (caffemodel/HDF5)")
    parser.add_argument("--iterations", type=int, default=50, help="batches to run")
    add_device_arguments(parser)


def run(args: argparse.Namespace) -> int:
    init_log()
    if args.model and not args.weights:
        raise CaffeError("Need model weights to score: caffe test -weights x.caffemodel")
    net = net_from_args(args, "test", "score", TEST, args.weights)
    LOG.info("Running for %d iterations.", args.iterations)
    names = [name for name in net.outputs for _ in range(net.blobs[name].count)]
    total = torch.zeros(len(names), dtype=torch.float64)
    loss = 0.0
    for i in range(args.iterations):
        loss += net._forward()
        values = torch.cat([net.blobs[n].tensor.detach().reshape(-1).double().cpu()
                            for n in net.outputs]) if names else total
        for name, v in zip(names, values.tolist()):
            LOG.info("Batch %d, %s = %g", i, name, v)
        total += values
    LOG.info("Loss: %g", loss / args.iterations)
    weights = net.blob_loss_weights
    for name, v in zip(names, (total / args.iterations).tolist()):
        w = weights[name]
        LOG.info("%s = %g%s", name, v, f" (* {w:g} = {w * v:g} loss)" if w else "")
    return 0
