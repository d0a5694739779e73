"""``caffe draw NET OUT.png [--rankdir LR] [--phase TRAIN|TEST|ALL] [--display_lrm]``: draw a
net's graph with Graphviz, as pycaffe's ``python/draw_net.py``. The image format follows the
output's extension (png, svg, pdf, ...; ``.dot``/``.gv``/``.raw`` write the Graphviz source).
Needs pydot (``pip install neocaffe[draw]``) and, except for the source formats, Graphviz's
``dot`` program."""

from __future__ import annotations

import argparse

from caffe.layer import Phase
from caffe.proto import upgrade

COMMAND = "draw"
HELP = "draw a net prototxt as an image (needs pydot and Graphviz)"

_PHASES = {"TRAIN": Phase.TRAIN, "TEST": Phase.TEST, "ALL": None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input_net_proto_file", metavar="NET", help="net prototxt to draw")
    parser.add_argument("output_image_file", metavar="OUT",
                        help="image file to write; its extension gives the format")
    parser.add_argument("--rankdir", default="LR",
                        help="graph direction: LR (left-right), RL, TB (top-bottom) or BT")
    parser.add_argument("--phase", default="ALL", type=str.upper, choices=sorted(_PHASES),
                        help="draw only the layers of this phase (default: ALL layers)")
    parser.add_argument("--display_lrm", action="store_true",
                        help="show the non-zero learning-rate multipliers of Convolution, "
                             "Deconvolution and InnerProduct layers")


def run(args: argparse.Namespace) -> int:
    import caffe.draw

    net = upgrade.read_net_param(args.input_net_proto_file, strict=False)
    print(f"Drawing net to {args.output_image_file}")
    caffe.draw.draw_net_to_file(net, args.output_image_file, args.rankdir,
                                _PHASES[args.phase], args.display_lrm)
    return 0
