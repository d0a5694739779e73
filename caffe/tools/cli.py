"""The ``caffe`` command: ``caffe <command> [flags]``, with Caffe's gflags spelling accepted
(``-solver x``, ``-solver=x``, ``--solver x``).

Subcommands are discovered from the modules of ``caffe.tools`` (see its docstring)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
from collections.abc import Sequence
from importlib import metadata

import caffe.tools


def normalize_flags(argv: Sequence[str]) -> list[str]:
    """Turn gflags-style single-dash long flags (``-solver``) into ``--solver``; keep negative
    numbers and short flags (``-o``) as they are."""
    out = []
    for a in argv:
        if re.match(r"^-[A-Za-z_][A-Za-z0-9_]+(=.*)?$", a):
            a = "-" + a
        out.append(a)
    return out


def _commands() -> dict[str, object]:
    found = {}
    for info in pkgutil.iter_modules(caffe.tools.__path__):
        if info.name in ("cli", "__main__"):
            continue
        module = importlib.import_module(f"caffe.tools.{info.name}")
        name = getattr(module, "COMMAND", None)
        if name:
            found[name] = module
    return found


#: Caffe's own commands, and the flags its ``caffe`` binary defines for all of them (gflags
#: are global: a command ignores the ones it does not use, as in ``caffe time -model m
#: -weights w -gpu 0``)
CAFFE_COMMANDS = ("train", "test", "time", "device_query")
CAFFE_FLAGS = ("gpu", "solver", "model", "phase", "level", "stage", "snapshot", "weights",
               "iterations", "sigint_effect", "sighup_effect")


def _package_version() -> str:
    try:
        return metadata.version("neocaffe")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "not installed"


def build_parser() -> argparse.ArgumentParser:
    from caffe import __version__

    parser = argparse.ArgumentParser(
        prog="caffe", description="neocaffe: Caffe's command line on PyTorch.")
    parser.add_argument("--version", action="version",
                        version=f"caffe version {__version__} (neocaffe {_package_version()})")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, module in sorted(_commands().items()):
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        if name in CAFFE_COMMANDS:
            for flag in CAFFE_FLAGS:
                if f"--{flag}" not in p._option_string_actions:
                    p.add_argument(f"--{flag}", help=argparse.SUPPRESS)  # accepted, unused
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(normalize_flags(argv))
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    from caffe.allocator import retain_freed_memory
    from caffe.errors import CaffeError, with_device_hint

    retain_freed_memory()  # this process is ours: reuse freed pages (caffe/allocator.py)
    try:
        return int(args._run(args) or 0)
    except CaffeError as e:
        print(f"caffe {args.command}: error: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        if "device-side assert" not in str(e):
            raise
        print(f"caffe {args.command}: error: {with_device_hint(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def tool_main(command: str) -> int:
    """Entry point for a tool's own console script (``convert_imageset ...``)."""
    return main([command] + sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
