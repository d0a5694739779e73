"""``caffe time``: benchmark a model's execution (Caffe's ``caffe time``).

``caffe time -model M [-iterations 50] [-phase TRAIN|TEST] [-gpu ids] [-level N]
[-stage s1,s2]`` runs one warm-up forward (and backward in TRAIN), then times ``iterations``
forward passes (and, in TRAIN, backward passes) layer by layer, and logs the average forward
and backward time of every layer, of the whole passes, and the total.
"""

from __future__ import annotations

import argparse

from caffe._common import LOG, init_log
from caffe.layer import Phase
from caffe.timer import Timer
from caffe.tools.train import add_device_arguments, net_from_args

COMMAND = "time"
HELP = "benchmark a model: average forward/backward time per layer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="", help="the net definition (prototxt)")
    parser.add_argument("--iterations", type=int, default=50, help="passes to time")
    parser.add_argument("--phase", default="TRAIN", choices=("TRAIN", "TEST"),
                        help="net phase (TRAIN also times the backward pass)")
    add_device_arguments(parser)


def run(args: argparse.Namespace) -> int:
    init_log()
    phase = Phase[args.phase]
    train = phase == Phase.TRAIN
    net = net_from_args(args, "time", "time", phase)
    LOG.info("Performing Forward")
    LOG.info("Initial loss: %g", net._forward())
    if train:
        LOG.info("Performing Backward")
        net._backward()
    n = len(net.layers)
    forward_ms = [0.0] * n
    backward_ms = [0.0] * n
    forward_total = backward_total = 0.0
    LOG.info("*** Benchmark begins ***")
    LOG.info("Testing for %d iterations.", args.iterations)
    total, iteration, passes, layer = Timer(), Timer(), Timer(), Timer()
    total.start()
    for j in range(args.iterations):
        iteration.start()
        passes.start()
        for i in range(n):
            layer.start()
            net._forward(i, i)
            forward_ms[i] += layer.ms
        forward_total += passes.ms
        if train:
            passes.start()
            for i in range(n - 1, -1, -1):
                layer.start()
                net._backward(i, i)
                backward_ms[i] += layer.ms
            backward_total += passes.ms
        LOG.info("Iteration: %d forward-backward time: %g ms.", j + 1, iteration.ms)
    iters = args.iterations
    LOG.info("Average time per layer: ")
    for i, name in enumerate(net._layer_names):
        LOG.info("%10s\tforward: %g ms.", name, forward_ms[i] / iters)
        if train:
            LOG.info("%10s\tbackward: %g ms.", name, backward_ms[i] / iters)
    LOG.info("Average Forward pass: %g ms.", forward_total / iters)
    if train:
        LOG.info("Average Backward pass: %g ms.", backward_total / iters)
    total_ms = total.ms
    LOG.info("Average Forward-Backward: %g ms.", total_ms / iters)
    LOG.info("Total Time: %g ms.", total_ms)
    LOG.info("*** Benchmark ends ***")
    return 0
