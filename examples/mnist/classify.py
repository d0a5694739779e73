"""Classify a few held-out MNIST digits with trained LeNet weights, through caffe.Net.

Train first (from the repository root)::

    caffe train -solver examples/mnist/lenet_solver.prototxt

then::

    python examples/mnist/classify.py                 # the latest snapshot, 10 images
    python examples/mnist/classify.py --count 20 \
        --weights examples/mnist/snapshots/lenet_iter_500.caffemodel

The images come from the 2,000 held out of training (mnist_data_layer's 'test' split).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys

import numpy as np
from mnist_data_layer import load_mnist

import caffe

HERE = os.path.dirname(os.path.abspath(__file__))


def latest_snapshot(folder: str = os.path.join(HERE, "snapshots")) -> str | None:
    """The snapshot with the highest iteration in ``folder``, or None."""
    found = []
    for path in glob.glob(os.path.join(folder, "*_iter_*.caffemodel")):
        m = re.search(r"_iter_(\d+)\.caffemodel$", path)
        if m:
            found.append((int(m.group(1)), path))
    return max(found)[1] if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="", help="a caffemodel (default: latest snapshot)")
    parser.add_argument("--count", type=int, default=10, help="how many images to classify")
    parser.add_argument("--start", type=int, default=0, help="first held-out image")
    args = parser.parse_args(argv)
    weights = args.weights or latest_snapshot()
    if not weights:
        print("No trained weights found: run `caffe train -solver "
              "examples/mnist/lenet_solver.prototxt` first, or pass --weights.", file=sys.stderr)
        return 1
    images, labels = load_mnist("test")
    rows = slice(args.start, args.start + args.count)
    batch, truth = images[rows], labels[rows].astype(int)
    net = caffe.Net(os.path.join(HERE, "lenet.prototxt"), caffe.TEST, weights=weights)
    net.blobs["data"].reshape(*batch.shape)
    net.reshape()
    probs = net.forward(data=batch)["prob"]
    predicted = probs.argmax(axis=1)
    print(f"weights: {weights}")
    for i, (p, t) in enumerate(zip(predicted, truth)):
        mark = "" if p == t else "   <- wrong"
        print(f"held-out image {args.start + i:4d}: predicted {p} "
              f"(p = {probs[i, p]:.3f}), true {t}{mark}")
    print(f"{int(np.sum(predicted == truth))} of {len(truth)} correct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
