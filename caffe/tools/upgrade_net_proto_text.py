"""``caffe upgrade_net_proto_text NET_IN NET_OUT``: rewrite a net prototxt of an old format
(V0 layers, V1 ``layers { type: ENUM }``, legacy ``input:`` fields, data-transformation fields,
three-param BatchNorm) in the current format, as Caffe's tool of that name. The exit status is
0 on success, 1 when the upgrade hit a problem Caffe only warns about (see the log), 2 when the
input cannot be read."""

from __future__ import annotations

import argparse
import sys

from caffe.errors import ProtoError
from caffe.proto import files, upgrade

COMMAND = "upgrade_net_proto_text"
HELP = "upgrade an old-format (V0/V1, legacy input) net prototxt to the current format"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="NET_IN", help="net in an old format (text or binary)")
    parser.add_argument("output", metavar="NET_OUT", help="where to write the upgraded net")


def convert_net(command: str, src: str, dst: str, binary: bool) -> int:
    """Read the net ``src`` (text or binary), upgrade it and write it to ``dst`` as text or
    binary. Shared by upgrade_net_proto_text and upgrade_net_proto_binary."""
    try:
        param = upgrade.read_net_param(src, upgrade=False)
    except ProtoError as e:
        print(f"caffe {command}: error: {e}", file=sys.stderr)
        return 2
    problems: list[str] = []
    if not upgrade.upgrade_net_as_needed(param, src, problems):
        print(f"File already in latest proto format: {src}", file=sys.stderr)
    elif problems:
        print(f"Encountered {len(problems)} problem(s) while upgrading {src}:",
              file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
    if binary:
        files.write_binary(dst, param)
    else:
        files.write_text(dst, param)
    print(f"Wrote upgraded NetParameter {'binary' if binary else 'text'} proto to {dst}")
    return 1 if problems else 0


def run(args: argparse.Namespace) -> int:
    return convert_net(COMMAND, args.input, args.output, binary=False)


def main() -> int:
    from caffe.tools.cli import tool_main

    return tool_main(COMMAND)
