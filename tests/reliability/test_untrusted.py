"""Untrusted models: loading weights never runs code (not even a Python layer the caffemodel
names), a prototxt runs Python code only through the ``type: "Python"`` layers it names, and
``allow_python_layers=False`` / ``--no-python-layers`` refuse those with a clear error. The
package never unpickles (or evaluates) data it did not write."""

from __future__ import annotations

import ast
import os
import sys
import uuid

import pytest
from google.protobuf import text_format

import caffe
from caffe import model_io
from caffe.errors import PythonLayerError
from caffe.proto import caffe_pb2, upgrade
from caffe.tools import cli

PLAIN = """
name: "plain"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 } }
"""
WITH_PYTHON = PLAIN + """
layer { name: "py" type: "Python" bottom: "ip" top: "out"
        python_param { module: "%s" layer: "Anything" param_str: "x" } }
"""


@pytest.fixture
def booby_trap(tmp_path, monkeypatch):
    """A module on sys.path that leaves a marker file when imported; yields (name, marker)."""
    name = f"booby_{uuid.uuid4().hex}"
    marker = tmp_path / "it_ran"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "import caffe\n"
        "class Anything(caffe.Layer):\n"
        "    def setup(self, bottom, top): pass\n"
        "    def reshape(self, bottom, top): top[0].reshape(*bottom[0].data.shape)\n"
        "    def forward(self, bottom, top): top[0].data[...] = bottom[0].data\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def _ran(marker, name) -> bool:
    return marker.exists() or name in sys.modules


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_loading_a_caffemodel_never_runs_code(tmp_path, booby_trap):
    name, marker = booby_trap
    model = caffe_pb2.NetParameter(name="evil")
    text_format.Merge(WITH_PYTHON % name, model)
    ip = caffe.Net(text_format.Parse(PLAIN, caffe_pb2.NetParameter()), caffe.TEST)
    for lp in model.layer:
        if lp.name == "ip":
            lp.blobs.extend(model_io.net_to_proto(ip).layer[1].blobs)
    path = str(tmp_path / "evil.caffemodel")
    caffe.proto.files.write_binary(path, model)

    upgrade.read_weights_param(path)
    upgrade.read_net_param(path)
    net = caffe.Net(_write(tmp_path / "plain.prototxt", PLAIN), caffe.TEST, weights=path)
    model_io.copy_trained_layers(net, path)
    net.copy_from(path)
    assert cli.main(["upgrade_net_proto_binary", path, str(tmp_path / "up.caffemodel")]) == 0
    assert not _ran(marker, name), "loading a caffemodel imported the Python layer it names"


def test_only_python_layers_import_modules(tmp_path, booby_trap):
    name, marker = booby_trap
    text = PLAIN + f"""
layer {{ name: "relu" type: "ReLU" bottom: "ip" top: "ip"
        python_param {{ module: "{name}" layer: "Anything" }} }}
layer {{ name: "skipped" type: "Python" bottom: "ip" top: "out"
        python_param {{ module: "{name}" layer: "Anything" }} include {{ phase: TRAIN }} }}
"""
    caffe.Net(_write(tmp_path / "relu.prototxt", text), caffe.TEST).forward()
    assert not _ran(marker, name), "a module named outside a (used) Python layer was imported"


def test_python_layers_refused_when_not_allowed(tmp_path, booby_trap):
    name, marker = booby_trap
    path = _write(tmp_path / "py.prototxt", WITH_PYTHON % name)
    with pytest.raises(PythonLayerError, match="allow_python_layers=False"):
        caffe.Net(path, caffe.TEST, allow_python_layers=False)
    assert not _ran(marker, name)
    # the same net with Python layers allowed does import the module: the trap works
    caffe.Net(path, caffe.TEST).forward()
    assert _ran(marker, name)


@pytest.mark.parametrize("command", ["test", "time"])
def test_cli_no_python_layers_flag(tmp_path, booby_trap, capsys, command):
    name, marker = booby_trap
    path = _write(tmp_path / "py.prototxt", WITH_PYTHON % name)
    weights = str(tmp_path / "w.caffemodel")
    caffe.Net(_write(tmp_path / "plain.prototxt", PLAIN), caffe.TEST).save(weights)
    args = [command, "-model", path, "-iterations", "1", "-no_python_layers"]
    if command == "test":
        args += ["-weights", weights]
    assert cli.main(args) == 1
    assert "Python layer" in capsys.readouterr().err
    assert not _ran(marker, name)


# ---------------------------------------------------------------------------- static guard
_PACKAGE = os.path.dirname(caffe.__file__)


def _unsafe_calls(tree: ast.AST) -> list[str]:
    """Calls that can run code hidden in data: unpickling, eval/exec, and np.load or torch.load
    without their safe flags."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found += [f"import {n}" for n in names
                      if n.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve")]
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
            else ""
        kw = {k.arg: k.value for k in node.keywords}
        if name in ("eval", "exec") and isinstance(f, ast.Name):
            found.append(f"{name}()")
        elif name == "load" and isinstance(f, ast.Attribute) and \
                isinstance(f.value, ast.Name) and f.value.id in ("np", "numpy"):
            flag = kw.get("allow_pickle")
            if not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append("np.load without allow_pickle=False")
        elif name == "load" and isinstance(f, ast.Attribute) and \
                isinstance(f.value, ast.Name) and f.value.id == "torch":
            flag = kw.get("weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append("torch.load without weights_only=True")
        elif name in ("load", "unsafe_load") and isinstance(f, ast.Attribute) and \
                isinstance(f.value, ast.Name) and f.value.id == "yaml":
            found.append("yaml.load")
    return found


def test_package_never_unpickles_or_evaluates_data():
    problems = []
    for root, _, names in os.walk(_PACKAGE):
        for n in names:
            if n.endswith(".py") and n != "caffe_pb2.py":
                path = os.path.join(root, n)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                problems += [f"{os.path.relpath(path, _PACKAGE)}: {p}"
                             for p in _unsafe_calls(tree)]
    assert not problems, problems


def test_static_guard_catches_what_it_looks_for():
    bad = ast.parse("import pickle\nnp.load(f)\ntorch.load(f)\neval(s)\nyaml.load(s)\n"
                    "np.load(f, allow_pickle=True)\n")
    good = ast.parse("np.load(f, allow_pickle=False)\ntorch.load(f, weights_only=True)\n")
    assert len(_unsafe_calls(bad)) == 6
    assert _unsafe_calls(good) == []
