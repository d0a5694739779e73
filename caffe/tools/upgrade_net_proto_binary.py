"""``caffe upgrade_net_proto_binary MODEL_IN MODEL_OUT``: rewrite a binary net (a caffemodel
with weights) of an old format (V0/V1 layers) in the current format, as Caffe's tool of that
name. Exit status as upgrade_net_proto_text."""

from __future__ import annotations

import argparse

from caffe.tools.upgrade_net_proto_text import convert_net

COMMAND = "upgrade_net_proto_binary"
HELP = "upgrade an old-format (V0/V1) binary net or caffemodel to the current format"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="MODEL_IN", help="binary net in an old format")
    parser.add_argument("output", metavar="MODEL_OUT", help="where to write the upgraded net")


def run(args: argparse.Namespace) -> int:
    return convert_net(COMMAND, args.input, args.output, binary=True)


def main() -> int:
    from caffe.tools.cli import tool_main

    return tool_main(COMMAND)
