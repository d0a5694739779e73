"""Drawing nets, as pycaffe's ``caffe.draw``: a NetParameter becomes a Graphviz graph with one
node per layer (coloured by type, in-place layers green) and one per blob.

Needs pydot (``pip install pydot``, or ``pip install neocaffe[draw]``) and, to render images,
Graphviz's ``dot`` program (``apt-get install graphviz``, ``brew install graphviz`` or
``conda install graphviz``). Nets in the V0/V1 formats are upgraded (on a copy) before drawing.
"""

from __future__ import annotations

import os
import re
import shutil

from caffe.errors import CaffeError, also
from caffe.proto import caffe_pb2, upgrade

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}

_LEARNING_TYPES = ("Convolution", "Deconvolution", "InnerProduct")
_SOURCE_FORMATS = ("dot", "gv", "raw")
_INSTALL_DOT = ("install Graphviz (apt-get install graphviz, brew install graphviz or conda "
                "install graphviz) so that 'dot' is on PATH")


class DrawError(CaffeError, RuntimeError):
    """The graph cannot be drawn (bad argument, Graphviz failure)."""


class PydotMissingError(DrawError, ImportError):
    """pydot is not installed."""


class GraphvizMissingError(DrawError, FileNotFoundError):
    """Graphviz's ``dot`` program is not on PATH."""


def _pydot():
    try:
        import pydot
    except ImportError:
        raise PydotMissingError(
            "caffe.draw needs pydot: pip install pydot (or pip install neocaffe[draw]); "
            f"rendering images also needs Graphviz: {_INSTALL_DOT}") from None
    return pydot


def get_pooling_types_dict() -> dict[int, str]:
    """Pooling method number -> name (0 -> 'MAX', ...)."""
    return {v.number: v.name for v in caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR.values}


def get_edge_label(layer: caffe_pb2.LayerParameter) -> str:
    """The label of a layer's output edges: the batch size of a Data layer, the number of
    outputs of a Convolution / Deconvolution / InnerProduct layer, else empty."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer: caffe_pb2.LayerParameter) -> tuple[float, float]:
    """The (weights, bias) learning-rate multipliers of a Convolution, Deconvolution or
    InnerProduct layer (1.0 where not given)."""
    if layer.type not in _LEARNING_TYPES:
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    if len(layer.param) > 2:
        raise ValueError(f"Layer '{layer.name}' ({layer.type}) has {len(layer.param)} param "
                         "entries; could not parse the learning rate multipliers")
    mults = [spec.lr_mult for spec in layer.param] + [1.0] * (2 - len(layer.param))
    return mults[0], mults[1]


def get_layer_label(layer: caffe_pb2.LayerParameter, rankdir: str,
                    display_lrm: bool = False) -> str:
    """The quoted node label: name, type (with the pooling method), the kernel size, stride
    and pad of spatial layers and, with ``display_lrm``, the non-zero lr multipliers. Words
    are separated by spaces in vertical layouts and by line breaks in horizontal ones."""
    separator = " " if rankdir in ("TB", "BT") else r"\n"
    parts = [layer.name]
    if layer.type == "Pooling":
        parts.append(f"({layer.type} {get_pooling_types_dict()[layer.pooling_param.pool]})")
    else:
        parts.append(f"({layer.type})")
    if layer.type == "Pooling":
        pp = layer.pooling_param
        kernel, stride, pad = pp.kernel_size, pp.stride, pp.pad
    elif layer.type in ("Convolution", "Deconvolution"):
        cp = layer.convolution_param
        kernel = cp.kernel_size[0] if len(cp.kernel_size) else 1
        stride = cp.stride[0] if len(cp.stride) else 1
        pad = cp.pad[0] if len(cp.pad) else 0
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        parts.append(separator.join([f"kernel size: {kernel}", f"stride: {stride}",
                                     f"pad: {pad}"]))
    if display_lrm and layer.type in _LEARNING_TYPES:
        lrm0, lrm1 = get_layer_lr_mult(layer)
        if lrm0 or lrm1:
            parts.append(f"lr mult: {lrm0:.1f}, {lrm1:.1f}")
    return '"%s"' % separator.join(parts)


def choose_color_by_layertype(layertype: str) -> str:
    """Node colour of a layer type."""
    return {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
            "InnerProduct": "#CC33FF"}.get(layertype, "#6495ED")


def _included(layer: caffe_pb2.LayerParameter, phase) -> bool:
    """pycaffe's phase filter: include rules by phase, exclude rules by phase."""
    if layer.include and layer.exclude:
        raise also(DrawError(f"Layer '{layer.name}' has both include and exclude specified"),
                   ValueError)  # pycaffe's error there
    included = not layer.include or any(rule.phase == phase for rule in layer.include)
    return included and not any(rule.phase == phase for rule in layer.exclude)


def _current_format(caffe_net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    if not (upgrade.net_needs_v0_upgrade(caffe_net) or upgrade.net_needs_v1_upgrade(caffe_net)):
        return caffe_net
    net = caffe_pb2.NetParameter()
    net.CopyFrom(caffe_net)
    upgrade.upgrade_net_as_needed(net, f"<net {net.name}>")
    return net


def get_pydot_graph(caffe_net: caffe_pb2.NetParameter, rankdir: str, label_edges: bool = True,
                    phase=None, display_lrm: bool = False):
    """A pydot graph of ``caffe_net``. ``rankdir``: 'LR', 'RL', 'TB' or 'BT'; ``phase``:
    caffe.TRAIN / caffe.TEST to draw only that phase's layers (None: all); ``label_edges``:
    label output edges with batch sizes / output counts; ``display_lrm``: show lr
    multipliers."""
    pydot = _pydot()
    caffe_net = _current_format(caffe_net)
    graph = pydot.Dot(caffe_net.name or "Net", graph_type="digraph", rankdir=rankdir)
    nodes: dict[str, object] = {}
    edges: list[tuple[str, str, str]] = []
    for layer in caffe_net.layer:
        if phase is not None and not _included(layer, phase):
            continue
        node_name = f"{layer.name}_{layer.type}"
        label = get_layer_label(layer, rankdir, display_lrm=display_lrm)
        if len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]:
            style = NEURON_LAYER_STYLE
        else:
            style = dict(LAYER_STYLE_DEFAULT, fillcolor=choose_color_by_layertype(layer.type))
        nodes[node_name] = pydot.Node(label, **style)
        for blob in layer.bottom:
            nodes[blob + "_blob"] = pydot.Node(_quoted(blob), **BLOB_STYLE)
            edges.append((blob + "_blob", node_name, '""'))
        for blob in layer.top:
            nodes[blob + "_blob"] = pydot.Node(_quoted(blob))
            edges.append((node_name, blob + "_blob",
                          get_edge_label(layer) if label_edges else '""'))
    for node in nodes.values():
        graph.add_node(node)
    for src, dst, label in edges:
        graph.add_edge(pydot.Edge(nodes[src], nodes[dst], label=label))
    return graph


def _quoted(name: str) -> str:
    """A blob name as a Graphviz node id: as it is when it is a plain identifier (as pycaffe
    names blob nodes, so that ``graph.get_node('conv1')`` finds them), else quoted, so that
    ':' or '/' are no syntax (pydot reads a ':' as a port)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return name
    return '"%s"' % name.replace('"', '\\"')


def draw_net(caffe_net: caffe_pb2.NetParameter, rankdir: str, ext: str = "png", phase=None,
             display_lrm: bool = False) -> bytes:
    """The drawing of ``caffe_net`` in the format ``ext`` ('png', 'svg', 'pdf', ...; 'dot',
    'gv' and 'raw' give the Graphviz source and need no Graphviz)."""
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    if ext in _SOURCE_FORMATS:
        return graph.to_string().encode("utf-8")
    if shutil.which("dot") is None:
        raise GraphvizMissingError(
            f"Drawing a net as '{ext}' needs Graphviz's 'dot' program, which is not on PATH: "
            f"{_INSTALL_DOT}. (A '.dot' output file needs no Graphviz.)")
    try:
        return graph.create(format=ext)
    except Exception as e:  # pydot raises plain exceptions carrying dot's stderr
        raise DrawError(f"Graphviz could not draw the net as '{ext}': {e}") from e


def draw_net_to_file(caffe_net: caffe_pb2.NetParameter, filename: str, rankdir: str = "LR",
                     phase=None, display_lrm: bool = False) -> None:
    """Draw ``caffe_net`` into ``filename``, in the format its extension names."""
    ext = os.path.splitext(filename)[1][1:]
    if not ext:
        raise DrawError(f"'{filename}' has no extension to tell the image format (use .png, "
                        ".svg, .pdf, or .dot for the Graphviz source)")
    data = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    with open(filename, "wb") as f:
        f.write(data)
