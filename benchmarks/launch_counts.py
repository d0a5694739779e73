"""Kernel launches per pass: for each net and mode of the suite, the aten ops that launch a
kernel on a GPU (views, shape ops and host reads excluded), counted on the CPU for neocaffe and
for its native PyTorch twin, plus the host reads (ops that wait for a GPU) neocaffe makes.

On a GPU a small net is launch-bound: its pass costs about one launch per kernel plus Python,
so these counts predict what a CUDA run will show without a GPU. Two CPU-only differences are
counted here: the label range checks (``CAFFE_CHECK_LABELS``: an ``aminmax`` and host reads),
which a GPU pass skips, and the in-place affine of a BatchNorm with global statistics (and its
folded Scale), two kernels on the CPU (``mul_``, ``add_``) and one ``addcmul`` on a GPU:
ResNet-50's forward excess.

    python -m benchmarks.launch_counts [--markdown FILE] [--only net[:mode],...]
"""

from __future__ import annotations

import argparse
import collections
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.suite import CaffeSide, Case, Device, TwinSide, build_case

#: aten ops that launch no kernel (views, metadata, allocation, profiler markers)
NO_KERNEL = frozenset({
    "view", "_unsafe_view", "_reshape_alias", "reshape", "detach", "alias", "t", "transpose",
    "permute", "expand", "unsqueeze", "squeeze", "slice", "select", "narrow", "split",
    "as_strided", "empty", "empty_like", "empty_strided", "lift_fresh", "resize_",
    "_record_function_enter_new", "_record_function_exit",
})
#: ops that read a value back to the host (a wait for the device)
HOST_READS = frozenset({"_local_scalar_dense", "item", "nonzero", "is_nonzero",
                        "masked_select", "_unique2"})
NETS = ("lenet", "cifar10_quick", "caffenet", "googlenet", "resnet50")
MODES = ("forward", "fwdbwd", "solver")


class KernelCounter(TorchDispatchMode):
    """Counts kernel-launching aten ops and host reads by name while active."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels: collections.Counter[str] = collections.Counter()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in HOST_READS:
            self.reads += 1
        elif name not in NO_KERNEL:
            self.kernels[name] += 1
        return func(*args, **(kwargs or {}))


def count_case(case: Case, device: Device) -> dict:
    """Kernels per pass of both sides (after two warm-up passes) and the differing ops."""
    param, ref, inputs = build_case(case, device)
    sides = {"ours": CaffeSide(case, param, ref, inputs),
             "twin": TwinSide(case, param, ref, inputs, device.torch)}
    counted = {}
    for name, side in sides.items():
        side.run()
        side.run()
        with KernelCounter() as counter:
            side.run()
        counted[name] = counter
    ours, twin = counted["ours"].kernels, counted["twin"].kernels
    diff = {k: ours[k] - twin[k] for k in ours.keys() | twin.keys() if ours[k] != twin[k]}
    return {"net": case.net, "batch": case.batch, "mode": case.mode,
            "ours": sum(ours.values()), "twin": sum(twin.values()),
            "host_reads": counted["ours"].reads,
            "differing": dict(sorted(diff.items(), key=lambda kv: (-abs(kv[1]), kv[0])))}


def markdown(rows: list[dict]) -> str:
    lines = ["# Kernel launches per pass: neocaffe vs native PyTorch twin", "",
             "`python -m benchmarks.launch_counts` (counted on the CPU; see the module "
             "docstring). 'host reads': ops of neocaffe's pass that wait for the device (the "
             "CPU-only label checks included). A BatchNorm with global statistics applies its "
             "affine in place as `mul_` and `add_` on the CPU, one `addcmul` on a GPU "
             "(ResNet-50's forward excess here).", "",
             "| net | batch | mode | neocaffe | twin | ratio | host reads | differing ops "
             "(neocaffe - twin) |", "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        diff = ", ".join(f"{k} {v:+d}" for k, v in list(r["differing"].items())[:8])
        lines.append(f"| {r['net']} | {r['batch']} | {r['mode']} | {r['ours']} | {r['twin']} | "
                     f"{r['ours'] / max(r['twin'], 1):.2f} | {r['host_reads']} | {diff} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--markdown", help="write the table here")
    p.add_argument("--only", help="comma-separated net[:mode] filters")
    args = p.parse_args(argv)
    wanted = [w.split(":") for w in args.only.split(",")] if args.only else None
    torch.set_num_threads(1)
    device = Device("cpu")
    rows = []
    for net in NETS:
        for mode in MODES:
            if wanted and not any(w[0] == net and (len(w) == 1 or w[1] == mode)
                                  for w in wanted):
                continue
            rows.append(count_case(Case(net, 2, mode), device))
            r = rows[-1]
            print(f"{net} {mode}: neocaffe {r['ours']}, twin {r['twin']}, host reads "
                  f"{r['host_reads']}", file=sys.stderr)
    text = markdown(rows)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
