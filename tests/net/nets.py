"""Small nets (prototxt text) and helpers shared by the Net tests."""

from __future__ import annotations

import os
import tempfile

from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2


def net_param(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter())


_FOLDER = tempfile.TemporaryDirectory(prefix="neocaffe-tests-")


def write(text: str, suffix: str = ".prototxt", folder: str | None = None) -> str:
    """Write ``text`` to a new file in a folder removed when the test process exits."""
    fd, path = tempfile.mkstemp(suffix=suffix, dir=folder or _FOLDER.name)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def make_net(text: str, phase=caffe.TRAIN, **kw) -> caffe.Net:
    return caffe.Net(net_param(text), phase, **kw)


IP_FILLERS = ("weight_filler { type: 'gaussian' std: 0.5 } "
              "bias_filler { type: 'uniform' min: -0.5 max: 0.5 }")

def euclid_net(module: str, extra: str = "") -> str:
    """Input -> InnerProduct -> the Python EuclideanLoss of ``module`` (tests/net/conftest.py's
    ``python_layer_module``); ``extra`` goes before the layers (e.g. force_backward)."""
    return """
    %s
    layer { name: "input" type: "Input" top: "data" top: "label"
            input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
    layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
            inner_product_param { num_output: 2 %s } }
    layer { name: "loss" type: "Python" bottom: "fc" bottom: "label" top: "loss"
            python_param { module: "%s" layer: "EuclideanLoss" } loss_weight: 1 }
    """ % (extra, IP_FILLERS, module)


LINREG = """
name: "linreg"
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
        inner_product_param { num_output: 2 %s } }
layer { name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "label" top: "loss" }
""" % IP_FILLERS
