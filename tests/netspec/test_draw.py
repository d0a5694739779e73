"""caffe.draw and ``caffe draw``: graph labels, colours, phase filter, rankdir, lr-mult display,
a PNG of a real net, and clear errors when pydot or Graphviz are missing. Tests that need
pydot, or Graphviz's ``dot``, skip when they are not installed."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys

import pytest
from google.protobuf import text_format

import caffe
import caffe.draw  # importable without pydot; drawing then says how to install it
from caffe.proto import caffe_pb2, upgrade

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                    "legacy")
LENET_TRAIN_TEST = os.path.join(DATA, "lenet_train_test.prototxt")

needs_pydot = pytest.mark.skipif(importlib.util.find_spec("pydot") is None,
                                 reason="pydot is not installed (pip install pydot)")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot is not installed")


def layer(text: str) -> caffe_pb2.LayerParameter:
    return text_format.Parse(text, caffe_pb2.LayerParameter())


def lenet() -> caffe_pb2.NetParameter:
    return upgrade.read_net_param(LENET_TRAIN_TEST)


def test_layer_labels():
    conv = layer('name: "c1" type: "Convolution" convolution_param { num_output: 8 '
                 'kernel_size: 5 stride: 2 pad: 1 } param { lr_mult: 1 } param { lr_mult: 2 }')
    assert caffe.draw.get_layer_label(conv, "LR") == (
        r'"c1\n(Convolution)\nkernel size: 5\nstride: 2\npad: 1"')
    assert caffe.draw.get_layer_label(conv, "TB", display_lrm=True) == (
        '"c1 (Convolution) kernel size: 5 stride: 2 pad: 1 lr mult: 1.0, 2.0"')
    pool = layer('name: "p" type: "Pooling" pooling_param { pool: AVE kernel_size: 3 '
                 'stride: 2 }')
    assert caffe.draw.get_layer_label(pool, "BT") == (
        '"p (Pooling AVE) kernel size: 3 stride: 2 pad: 0"')
    assert caffe.draw.get_layer_label(layer('name: "r" type: "ReLU"'), "TB") == '"r (ReLU)"'


def test_lr_mult_defaults_and_zero_lr_is_hidden():
    ip = layer('name: "ip" type: "InnerProduct"')
    assert caffe.draw.get_layer_lr_mult(ip) == (1.0, 1.0)
    frozen = layer('name: "ip" type: "InnerProduct" param { lr_mult: 0 } param { lr_mult: 0 }')
    assert "lr mult" not in caffe.draw.get_layer_label(frozen, "TB", display_lrm=True)
    with pytest.raises(ValueError, match="ReLU layers do not have a learning rate"):
        caffe.draw.get_layer_lr_mult(layer('type: "ReLU"'))


def test_edge_labels_and_colours():
    assert caffe.draw.get_edge_label(layer('type: "Data" data_param { batch_size: 64 }')) == \
        "Batch 64"
    assert caffe.draw.get_edge_label(
        layer('type: "Deconvolution" convolution_param { num_output: 7 }')) == "7"
    assert caffe.draw.get_edge_label(layer('type: "ReLU"')) == '""'
    assert caffe.draw.choose_color_by_layertype("Pooling") == "#FF9900"
    assert caffe.draw.choose_color_by_layertype("Eltwise") == "#6495ED"


def _node_names(graph) -> set[str]:
    return {node.get_name().strip('"') for node in graph.get_nodes()}


@needs_pydot
def test_phase_filter_and_in_place_style():
    net = lenet()
    train = caffe.draw.get_pydot_graph(net, "LR", phase=caffe.TRAIN)
    test = caffe.draw.get_pydot_graph(net, "LR", phase=caffe.TEST)
    everything = caffe.draw.get_pydot_graph(net, "LR")
    has_accuracy = [any(n.startswith("accuracy") for n in _node_names(g))
                    for g in (train, test, everything)]
    assert has_accuracy == [False, True, True]
    relu = [n for n in train.get_nodes() if n.get_name().startswith('"relu1')][0]
    assert relu.get("fillcolor") == caffe.draw.NEURON_LAYER_STYLE["fillcolor"]
    assert train.get_rankdir() == "LR"
    assert caffe.draw.LAYER_STYLE_DEFAULT["fillcolor"] == "#6495ED"  # not mutated by drawing


@needs_pydot
def test_blob_nodes_are_named_as_pycaffe_names_them():
    net = caffe_pb2.NetParameter()
    text_format.Merge('layer { name: "in" type: "Input" top: "data" top: "a:b/c" }', net)
    graph = caffe.draw.get_pydot_graph(net, "TB")
    assert graph.get_node("data")  # a plain name as it is, as pycaffe's pydot.Node(blob)
    assert graph.get_node('"a:b/c"')  # quoted, or pydot would read ':' as a port


@needs_pydot
def test_v1_nets_are_drawn_after_upgrade():
    v1 = upgrade.read_net_param(LENET_TRAIN_TEST, upgrade=False)
    assert v1.layers and not v1.layer
    assert "conv1" in _node_names(caffe.draw.get_pydot_graph(v1, "TB"))


@needs_pydot
def test_graphviz_source_needs_no_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "lenet.dot"
    caffe.draw.draw_net_to_file(lenet(), str(out), "TB")
    text = out.read_text()
    assert text.startswith("digraph LeNet {") and "rankdir=TB" in text


@needs_pydot
def test_missing_dot_says_how_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="install Graphviz.*apt-get install graphviz"):
        caffe.draw.draw_net(lenet(), "LR", "png")


def test_missing_pydot_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydot", None)
    with pytest.raises(ImportError, match="pip install pydot") as e:
        caffe.draw.get_pydot_graph(lenet(), "LR")
    assert isinstance(e.value, caffe.errors.CaffeError)


@needs_pydot
@needs_dot
def test_draw_real_net_to_png(tmp_path):
    out = tmp_path / "lenet.png"
    caffe.draw.draw_net_to_file(lenet(), str(out), "LR", phase=caffe.TEST, display_lrm=True)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10000
    svg = caffe.draw.draw_net(lenet(), "BT", ext="svg")
    assert b"<svg" in svg and b"conv1" in svg


@needs_pydot
@needs_dot
def test_draw_command(tmp_path, capsys):
    from caffe.tools import cli

    out = tmp_path / "cifar.svg"
    rc = cli.main(["draw", os.path.join(DATA, "cifar10_full_train_test.prototxt"), str(out),
                   "-rankdir", "TB", "--phase", "TEST", "--display_lrm"])
    assert rc == 0
    assert f"Drawing net to {out}" in capsys.readouterr().out
    svg = out.read_text()
    assert "<svg" in svg and "norm1" in svg and "lr mult" in svg


def test_draw_command_errors(tmp_path, capsys):
    from caffe.tools import cli

    with pytest.raises(SystemExit):
        cli.main(["draw", LENET_TRAIN_TEST, str(tmp_path / "x.png"), "--phase", "VAL"])
    assert cli.main(["draw", str(tmp_path / "missing.prototxt"), str(tmp_path / "x.png")]) == 1
    assert "missing.prototxt" in capsys.readouterr().err
