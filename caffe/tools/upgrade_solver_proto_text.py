"""``caffe upgrade_solver_proto_text SOLVER_IN SOLVER_OUT``: rewrite a solver prototxt that
uses the deprecated ``solver_type`` enum with the ``type`` string instead, as Caffe's tool of
that name. Exit status 0 on success, 2 when the input cannot be read or is inconsistent."""

from __future__ import annotations

import argparse
import sys

from caffe.errors import ProtoError, SolverError
from caffe.proto import caffe_pb2, files, upgrade

COMMAND = "upgrade_solver_proto_text"
HELP = "upgrade a solver prototxt using the deprecated solver_type enum to the current format"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="SOLVER_IN", help="solver prototxt in an old format")
    parser.add_argument("output", metavar="SOLVER_OUT", help="where to write the upgraded one")


def run(args: argparse.Namespace) -> int:
    try:
        param = files.read_text(args.input, caffe_pb2.SolverParameter())
        changed = upgrade.upgrade_solver_as_needed(param, args.input)
    except (ProtoError, SolverError) as e:
        print(f"caffe {COMMAND}: error: {e}", file=sys.stderr)
        return 2
    if not changed:
        print(f"File already in latest proto format: {args.input}", file=sys.stderr)
    files.write_text(args.output, param)
    print(f"Wrote upgraded SolverParameter text proto to {args.output}")
    return 0


def main() -> int:
    from caffe.tools.cli import tool_main

    return tool_main(COMMAND)
