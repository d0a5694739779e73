"""``caffe check-layer``: gradient-check and sanity-check one layer from a prototxt snippet.

    caffe check-layer --layer 'type: "Python" python_param { module: "my" layer: "L" }' \\
        --bottom 4,3 --bottom 4,1:int:5 [--python-path DIR] [--exhaustive]
"""

from __future__ import annotations

import argparse
import os
import sys

from caffe.errors import FileFormatError
from caffe.layer import Phase
from caffe.testing.gradient_check import GradientChecker
from caffe.testing.layer_check import BottomSpec, check_layer

COMMAND = "check-layer"
HELP = "check a layer's backward against finite differences, its reshape and propagate_down"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--layer", help="LayerParameter prototxt text (type, *_param, ...)")
    src.add_argument("--layer-file", help="a file holding the LayerParameter text")
    parser.add_argument("--bottom", action="append", default=[], metavar="SHAPE[:FILL]",
                        help="a bottom: comma shape and fill (gaussian, uniform, positive, "
                             "int:N for labels); repeat per bottom")
    parser.add_argument("--tops", type=int, help="number of tops (default: as many as the "
                        "type declares, else 1)")
    parser.add_argument("--no-gradient", action="append", type=int, default=[], metavar="I",
                        help="bottom I takes no gradient (not checked, propagate_down False) "
                             "though its fill is not int:N; repeat per bottom")
    parser.add_argument("--phase", choices=["TRAIN", "TEST"], default="TRAIN")
    parser.add_argument("--python-path", action="append", default=[],
                        help="folder to put on sys.path for Python layers (default: the CWD)")
    parser.add_argument("--stepsize", type=float, default=1e-2)
    parser.add_argument("--threshold", type=float, default=1e-3)
    parser.add_argument("--kink", type=float, default=0.0)
    parser.add_argument("--kink-range", type=float, default=-1.0)
    parser.add_argument("--exhaustive", action="store_true",
                        help="check every top element separately (slower, stricter)")


def _read_layer_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError as e:
        raise FileFormatError(f"{path}: cannot read the layer file ({e.strerror})") from None


def run(args: argparse.Namespace) -> int:
    for p in args.python_path or [os.getcwd()]:
        sys.path.insert(0, os.path.abspath(p))
    text = args.layer if args.layer is not None else _read_layer_file(args.layer_file)
    report = check_layer(text, [BottomSpec.parse(b) for b in args.bottom], args.tops,
                         Phase[args.phase],
                         GradientChecker(args.stepsize, args.threshold, 1701, args.kink,
                                         args.kink_range),
                         exhaustive=args.exhaustive, no_gradient=args.no_gradient)
    print(report)
    return 1 if report.failures else 0
