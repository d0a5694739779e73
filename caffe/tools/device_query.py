"""``caffe device_query``: describe the compute devices PyTorch sees."""

from __future__ import annotations

import argparse

import torch

COMMAND = "device_query"
HELP = "show the CPU and CUDA devices available to PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpu", default="", help="device ids to query (comma list or 'all')")


def run(args: argparse.Namespace) -> int:
    print(f"torch {torch.__version__}; CPU threads: {torch.get_num_threads()}")
    if not torch.cuda.is_available():
        print("No CUDA device is available (CPU mode only).")
        return 0
    ids = range(torch.cuda.device_count()) if args.gpu in ("", "all") else \
        [int(i) for i in args.gpu.split(",")]
    for i in ids:
        p = torch.cuda.get_device_properties(i)
        print(f"Device id: {i}")
        print(f"Name: {p.name}")
        print(f"Major revision number: {p.major}")
        print(f"Minor revision number: {p.minor}")
        print(f"Total global memory: {p.total_memory}")
        print(f"Number of multiprocessors: {p.multi_processor_count}")
    return 0
