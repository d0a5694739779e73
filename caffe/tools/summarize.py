"""``caffe summarize NET``: a net as a table, one line per layer (Caffe's
``tools/extra/summarize.py``, plus what building the net tells).

Columns: the layer's name; its type (``module.class`` for a Python layer); its ``param`` specs
that differ from the default (``name``, ``xLR`` for lr_mult, ``DxD`` for decay_mult); bottoms
``->`` tops (a loss weight as ``w * top``; a top no later layer reads is marked ``!``);
convolution and pooling arguments as ``kernel/stride+pad outputs/group``; then, when the net
builds in the chosen phase, each top's shape and the layer's parameter count, with the total
at the end. The Split layers Caffe inserts by itself (kept in a net read from a saved
``.caffemodel``) are left out.
A net whose data layers cannot open their sources is listed from its prototxt alone.
"""

from __future__ import annotations

import argparse
import os

from caffe._common import LOG, init_log
from caffe.errors import CaffeError
from caffe.layer import Phase
from caffe.net import Net, filter_net
from caffe.proto import caffe_pb2, upgrade
from caffe.tools.train import add_import_path, stages_from

COMMAND = "summarize"
HELP = "print a net as a table: layers, blobs, shapes, parameter counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("filename", help="the net prototxt")
    parser.add_argument("--phase", default="", type=str.upper, choices=("TRAIN", "TEST"),
                        help="the phase to build and list (default: build in TEST; list every "
                        "layer of a net that does not build)")
    parser.add_argument("--level", type=int, default=0, help="net state level")
    parser.add_argument("--stage", default="", help="net state stages, comma-separated")
    parser.add_argument("-w", "--max-width", "--max_width", type=int, default=30,
                        help="widest column (longer cells overflow)")
    parser.add_argument("--no-build", "--no_build", action="store_true",
                        help="list the prototxt only (no shapes; nothing is run)")
    parser.add_argument("--no-python-layers", "--no_python_layers", action="store_true",
                        help="refuse nets with Python layers (for untrusted models)")


def _param_spec(spec: caffe_pb2.ParamSpec) -> str:
    parts = [spec.name] if spec.name else []
    if spec.lr_mult != 1:
        parts.append(f"x{spec.lr_mult:g}")
    if spec.decay_mult != 1:
        parts.append(f"Dx{spec.decay_mult:g}")
    return " ".join(parts) or "-"


def _arguments(lp: caffe_pb2.LayerParameter) -> str:
    if lp.type in ("Convolution", "Deconvolution"):
        p = lp.convolution_param
        kernel = ",".join(map(str, p.kernel_size)) or f"{p.kernel_h}x{p.kernel_w}"
        text = kernel
        if any(s != 1 for s in p.stride) or p.stride_h > 1 or p.stride_w > 1:
            text += "/" + (",".join(map(str, p.stride)) or f"{p.stride_h}x{p.stride_w}")
        if any(p.pad) or p.pad_h or p.pad_w:
            text += "+" + (",".join(map(str, p.pad)) or f"{p.pad_h}x{p.pad_w}")
        text += f" {p.num_output}" + (f"/{p.group}" if p.group != 1 else "")
        return text
    if lp.type == "Pooling":
        p = lp.pooling_param
        if p.global_pooling:
            return "global " + caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool)
        text = str(p.kernel_size or f"{p.kernel_h}x{p.kernel_w}")
        stride = p.stride if not (p.stride_h or p.stride_w) else f"{p.stride_h}x{p.stride_w}"
        if stride != 1:
            text += f"/{stride}"
        if p.pad or p.pad_h or p.pad_w:
            text += "+" + str(p.pad or f"{p.pad_h}x{p.pad_w}")
        return text + " " + caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool)
    if lp.type == "InnerProduct":
        return str(lp.inner_product_param.num_output)
    return ""


def _is_auto_split(lp: caffe_pb2.LayerParameter) -> bool:
    return (lp.type == "Split" and lp.name.endswith("_split")
            and all("_split_" in t for t in lp.top))


def summary(layers: list[caffe_pb2.LayerParameter], net: Net | None = None) -> list[list[str]]:
    """The table's rows (a header first) for ``layers`` (as written), with shapes and counts
    from the built ``net`` when given."""
    unread = set()
    for lp in layers:
        unread |= set(lp.top)
        unread -= set(lp.bottom)
    header = ["name", "type", "param", "bottom", "", "top", "args"]
    if net is not None:
        header += ["top shapes", "params"]
    rows = [header]
    for lp in layers:
        tops = [(f"{lp.loss_weight[i]:g} * " if i < len(lp.loss_weight) else "") + t
                + ("!" if t in unread else "") for i, t in enumerate(lp.top)]
        specs = [_param_spec(s) for s in lp.param]
        if all(s == "-" for s in specs):
            specs = []
        kind = (f"{lp.python_param.module}.{lp.python_param.layer}" if lp.type == "Python"
                else lp.type)
        row = [lp.name, kind, f"({', '.join(specs)})" if specs else "",
               ", ".join(lp.bottom), "->", ", ".join(tops), _arguments(lp)]
        if net is not None:
            layer = net.layer_dict.get(lp.name)
            row.append(" ".join("x".join(map(str, net.blobs[t].shape)) or "scalar"
                                for t in lp.top))
            row.append(f"{sum(b.count for b in layer.blobs):,}" if layer is not None
                       and len(layer.blobs) else "")
        rows.append(row)
    return rows


def format_table(rows: list[list[str]], max_width: int) -> str:
    """Columns as narrow as their cells, at most ``max_width``; a longer cell overflows into
    the next column's space (and shifts it only when it must)."""
    widths = [min(max(len(r[j]) for r in rows), max_width) for j in range(len(rows[0]))]
    lines = []
    for row in rows:
        line, edge = "", 0
        for cell, width in zip(row, widths):
            edge += width + 1
            line += cell + " "
            line += " " * max(edge - len(line), 0)
        lines.append(line.rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # warnings and errors only (building the net logs every layer at INFO)
    init_log(level=max(1, int(os.environ.get("GLOG_minloglevel", "1") or 1)))
    param = upgrade.read_net_param(args.filename, strict=False)
    phase = args.phase or "TEST"
    net = None
    if not args.no_build:
        add_import_path(args.filename)
        try:  # from the upgraded copy: the file is read (and any upgrade reported) once
            net = Net(caffe_pb2.NetParameter.FromString(param.SerializeToString()),
                      Phase[phase], level=args.level, stages=stages_from(args.stage),
                      allow_python_layers=not args.no_python_layers)
        except CaffeError as e:
            LOG.warning("cannot build the net in %s (%s); listing the prototxt only", phase,
                        str(e).splitlines()[0])
    if net is not None or args.phase:
        param.state.phase = Phase[phase]
        param.state.level = args.level
        param.state.stage.extend(stages_from(args.stage))
        param = filter_net(param)
    layers = [lp for lp in param.layer if not _is_auto_split(lp)]
    print(format_table(summary(layers, net), max(args.max_width, 4)))
    if net is not None:
        total = sum(b.count for b in net.learnable_params)
        print(f"{len(layers)} layers, {total:,} parameter values "
              f"({total * 4 / 2**20:.1f} MiB as float32), phase {phase}")
    return 0
