"""Export (``caffe.export``): every layer configuration of the layer table that a deploy net can
hold traces into a ``torch.export`` program that gives the net's own numbers; real models go to
``.pt2`` and ONNX files that run without neocaffe (ONNX Runtime); what cannot be exported is
refused with the layer named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe import export
from caffe.proto import caffe_pb2

from layer_db import all_rows

ROWS = all_rows()
#: types an exported program cannot hold, and why (each is refused by name)
NOT_EXPORTED = {
    "Filter": "the size of its top depends on the values of its selector",
    "Data": "reads a database", "ImageData": "reads image files", "HDF5Data": "reads HDF5",
    "MemoryData": "reads arrays handed over from Python", "WindowData": "reads image windows",
    "DummyData": "generates its data", "HDF5Output": "writes files",
}
EXPORTED = [r for r in ROWS if r.type not in NOT_EXPORTED and r.type != "Python"]


def row_net(row) -> tuple[caffe.Net, list[np.ndarray]]:
    """A TEST net of Input layers (one per bottom of ``row``, holding the row's bottoms) feeding
    the row's layer."""
    arrays = [np.asarray(a, dtype=np.float32)
              for a in row.bottoms(np.random.default_rng(1234))]
    param = caffe_pb2.NetParameter(name=f"row_{row.id}")
    for i, a in enumerate(arrays):
        lp = param.layer.add(name=f"in{i}", type="Input", top=[f"b{i}"])
        lp.input_param.shape.add(dim=list(a.shape))
    lp = param.layer.add()
    lp.CopyFrom(row.layer_param(len(arrays), row.num_tops))
    net = caffe.Net(param, caffe.TEST)
    for i, a in enumerate(arrays):
        net.blobs[f"b{i}"].data[...] = a
    return net, arrays


@pytest.mark.parametrize("row", EXPORTED, ids=[f"{r.type}-{r.id}" for r in EXPORTED])
def test_layer_exports_with_the_nets_numbers(row):
    net, _ = row_net(row)
    feed = [net.blobs[name].data.copy() for name in net.inputs]
    expected = {k: v.copy() for k, v in net.forward().items()}
    program = export.to_torch(net, feed)
    got = program.module()(*[torch.from_numpy(a) for a in feed])
    assert len(got) == len(net.outputs)
    for name, g in zip(net.outputs, got):
        np.testing.assert_allclose(g.detach().numpy(), expected[name], rtol=1e-6, atol=1e-6,
                                   err_msg=name)


def test_every_type_is_exported_or_refused():
    covered = {r.type for r in EXPORTED} | set(NOT_EXPORTED) | {"Python"}
    assert sorted(set(caffe.layer_type_list()) - covered) == []


LENET = "benchmarks/nets/lenet.prototxt"


def lenet(batch: int | None = None) -> caffe.Net:
    caffe.set_random_seed(5)
    net = caffe.Net(LENET, caffe.TEST)
    if batch:
        net.blobs["data"].reshape(batch, 1, 28, 28)
        net.reshape()
    return net


def test_program_takes_another_batch_and_leaves_the_net_alone():
    net = lenet()
    x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    net.blobs["data"].data[...] = x
    before = net.forward()["prob"].copy()
    program = export.to_torch(net, [x[:3]])
    # the buffers each blob got when the trace reshaped the net are not part of the program
    assert not [n for n in program.graph.nodes if n.target is torch.ops.aten.zeros.default]
    got = program.module()(torch.from_numpy(x[:3]))[0]
    np.testing.assert_allclose(got.detach().numpy(), before[:3], rtol=1e-6, atol=1e-7)
    assert net.blobs["data"].shape == (64, 1, 28, 28)
    np.testing.assert_array_equal(net.blobs["prob"].data, before)
    np.testing.assert_array_equal(net.forward()["prob"], before)


def test_pt2_file_runs_with_plain_torch(tmp_path):
    import subprocess
    import sys

    net = lenet(batch=2)
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    net.blobs["data"].data[...] = x
    expected = net.forward()["prob"].copy()
    export.save(net, str(tmp_path / "lenet.pt2"))
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, torch\n"
            "sys.modules['caffe'] = None  # importing caffe would fail\n"
            f"p = torch.export.load(r'{tmp_path / 'lenet.pt2'}')\n"
            f"y = p.module()(torch.from_numpy(np.load(r'{tmp_path / 'x.npy'}')))[0]\n"
            f"np.save(r'{tmp_path / 'y.npy'}', y.detach().numpy())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-6, atol=1e-7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.pt2", "x.npy", "y.npy"]


#: layers that deploy nets run in place (top = bottom), with a parameter text
IN_PLACE = {
    "ReLU": "relu_param { negative_slope: 0.1 }", "PReLU": "",
    "PReLU shared": "prelu_param { channel_shared: true }", "ELU": "", "Sigmoid": "",
    "TanH": "", "Power": "power_param { power: 2 scale: 0.5 shift: 1 }", "Exp": "", "Log": "",
    "BNLL": "", "Threshold": "", "Clip": "clip_param { min: 0.5 max: 1.5 }", "Swish": "",
    "Dropout": "", "BatchNorm": "", "Scale": "scale_param { bias_term: true }", "Bias": "",
}


@pytest.mark.parametrize("kind", list(IN_PLACE))
def test_layers_computing_in_place_export(kind):
    """As in MTCNN's PReLUs or ResNet's BatchNorm + Scale pairs: the in-place forward (whose
    out= kernels autograd refuses while the export traces it) gives the net's numbers."""
    text = f"""
        layer {{ name: "in" type: "Input" top: "x"
                 input_param {{ shape {{ dim: 2 dim: 3 dim: 4 dim: 5 }} }} }}
        layer {{ name: "pre" type: "AbsVal" bottom: "x" top: "y" }}
        layer {{ name: "l" type: "{kind.split()[0]}" bottom: "y" top: "y" {IN_PLACE[kind]} }}"""
    net = caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TEST)
    rng = np.random.default_rng(3)
    for blob in net.params.get("l", []):
        blob.data[...] = rng.uniform(0.5, 1.5, blob.shape)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    net.blobs["x"].data[...] = x
    expected = net.forward()["y"].copy()
    got = export.to_torch(net, [x]).module()(torch.from_numpy(x))[0]
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-6, atol=1e-6)


def test_a_layer_in_place_on_an_input_leaves_the_callers_tensor():
    text = """
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "l" type: "Power" bottom: "x" top: "x" power_param { scale: 2 } }"""
    net = caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TEST)
    x = torch.ones(2, 3)
    for module in (export.NetModule(net), export.to_torch(net, [x.numpy()]).module()):
        (y,) = module(x)
        assert y.tolist() == [[2.0] * 3] * 2 and x.tolist() == [[1.0] * 3] * 2


@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")  # inside torch.onnx
def test_onnx_file_runs_in_onnx_runtime(tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    net = lenet(batch=2)
    x = np.random.default_rng(2).standard_normal((2, 1, 28, 28)).astype(np.float32)
    net.blobs["data"].data[...] = x
    expected = net.forward()["prob"].copy()
    export.to_onnx(net, str(tmp_path / "lenet.onnx"))
    session = ort.InferenceSession(str(tmp_path / "lenet.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["data"]
    assert [o.name for o in session.get_outputs()] == ["prob"]
    got = session.run(None, {"data": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")  # inside torch.onnx
def test_real_model_with_in_place_prelus_runs_in_onnx_runtime(tmp_path):
    """MTCNN's P-Net (a V2 deploy net with a legacy input header, PReLUs in place, two
    outputs) with its trained weights, at a dynamic batch."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    folder = "tests/data/legacy/mtcnn"
    net = caffe.Net(f"{folder}/det1.prototxt", caffe.TEST, weights=f"{folder}/det1.caffemodel")
    x = np.random.default_rng(4).standard_normal(net.blobs["data"].shape).astype(np.float32)
    net.blobs["data"].data[...] = x
    expected = {k: v.copy() for k, v in net.forward().items()}
    export.to_onnx(net, str(tmp_path / "det1.onnx"), [x], dynamic_batch=True)
    session = ort.InferenceSession(str(tmp_path / "det1.onnx"),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"data": x})
    assert [o.name for o in session.get_outputs()] == net.outputs
    for name, g in zip(net.outputs, got):
        np.testing.assert_allclose(g, expected[name], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")  # inside torch.onnx
def test_caffe_export_command_dynamic_batch_onnx(tmp_path, monkeypatch):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from caffe.tools import cli

    assert cli.main(["export", "-model", LENET, "-output", str(tmp_path / "l.onnx"),
                     "-dynamic_batch"]) == 0
    session = ort.InferenceSession(str(tmp_path / "l.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 1, 28, 28]
    assert session.get_outputs()[0].shape == ["batch", 10]
    assert session.run(None, {"data": np.zeros((5, 1, 28, 28), np.float32)})[0].shape == (5, 10)


def test_caffe_export_command(tmp_path, capsys, monkeypatch):
    from caffe.tools import cli

    monkeypatch.setenv("GLOG_minloglevel", "0")
    net = lenet()
    net.save(str(tmp_path / "w.caffemodel"))
    rc = cli.main(["export", "-model", LENET, "-weights", str(tmp_path / "w.caffemodel"),
                   "-output", str(tmp_path / "l.pt2"), "-batch", "3"])
    err = capsys.readouterr().err
    assert rc == 0
    assert "Wrote" in err and "data (3, 1, 28, 28)" in err and "prob (3, 10)" in err
    assert "largest difference from the net's forward 0" in err
    program = torch.export.load(str(tmp_path / "l.pt2"))
    assert tuple(program.module()(torch.zeros(3, 1, 28, 28))[0].shape) == (3, 10)


TORCH_LAYER = '''
import caffe


class Cube(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].tensor = bottom[0].tensor ** 3


class NumpyCube(Cube):
    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data ** 3
'''


def python_net(tmp_path, monkeypatch, layer: str) -> caffe.Net:
    (tmp_path / "export_layers.py").write_text(TORCH_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    param = caffe_pb2.NetParameter(name="py")
    param.layer.add(name="x", type="Input", top=["x"]).input_param.shape.add(dim=[2, 3])
    lp = param.layer.add(name="cube", type="Python", bottom=["x"], top=["y"])
    lp.python_param.module, lp.python_param.layer = "export_layers", layer
    return caffe.Net(param, caffe.TEST)


def test_python_layer_computing_with_torch_is_exported(tmp_path, monkeypatch):
    net = python_net(tmp_path, monkeypatch, "Cube")
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    got = export.to_torch(net).module()(torch.from_numpy(x))[0]
    np.testing.assert_array_equal(got.detach().numpy(), x ** 3)


def test_python_layer_computing_with_numpy_is_named(tmp_path, monkeypatch):
    net = python_net(tmp_path, monkeypatch, "NumpyCube")
    with pytest.raises(export.ExportError, match="Layer .cube. .Python.*blob.tensor"):
        export.to_torch(net)


@pytest.mark.parametrize("layer,message", [
    ('layer { name: "d" type: "DummyData" top: "x" dummy_data_param { shape { dim: 2 } } }',
     "Layer 'd' \\(DummyData\\) reads its own data"),
    ('layer { name: "m" type: "MemoryData" top: "x" top: "l" memory_data_param { batch_size: 1 '
     'channels: 1 height: 1 width: 1 } }', "Layer 'm' \\(MemoryData\\) reads its own data"),
    ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
     'layer { name: "s" type: "Input" top: "s" input_param { shape { dim: 2 } } }\n'
     'layer { name: "f" type: "Filter" bottom: "x" bottom: "s" top: "y" }',
     "Layer 'f' \\(Filter\\): the shape of its top depends on the values"),
])
def test_what_cannot_be_exported_is_refused_by_name(layer, message):
    from google.protobuf import text_format

    param = text_format.Parse(layer, caffe_pb2.NetParameter())
    with pytest.raises(export.ExportError, match=message):
        export.to_torch(caffe.Net(param, caffe.TEST))


def test_train_phase_is_refused():
    with pytest.raises(export.ExportError, match="phase TRAIN; export the TEST phase"):
        export.to_torch(caffe.Net(LENET, caffe.TRAIN))


#: configurations whose programs cannot leave the batch open (losses normalise by it, the
#: recurrent layers' first axis is time, parameters or slicing on the first axis)
FIXED_BATCH_TYPES = {"SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "InfogainLoss", "RNN",
                     "LSTM", "LSTMUnit"}
FIXED_BATCH_ROWS = {"Bias-bottom_axis_minus2", "Scale-learned_axis0_two_axes",
                    "Slice-legacy_slice_dim0_equal", "Crop-axis0_offsets"}


@pytest.mark.parametrize("row", EXPORTED, ids=[f"{r.type}-{r.id}" for r in EXPORTED])
def test_dynamic_batch_program_matches_the_net_at_another_batch(row):
    net, _ = row_net(row)
    feed = [net.blobs[name].data.copy() for name in net.inputs]
    try:
        program = export.to_torch(net, feed, dynamic_batch=True)
    except caffe.errors.CaffeError:
        if row.type in FIXED_BATCH_TYPES or f"{row.type}-{row.id}" in FIXED_BATCH_ROWS:
            return
        raise
    n = feed[0].shape[0] if feed and feed[0].ndim else None
    bigger = [np.concatenate([a, a]) if a.ndim and a.shape[0] == n else a for a in feed]
    for name, a in zip(net.inputs, bigger):
        net.blobs[name].reshape(*a.shape)
    net.reshape()
    for name, a in zip(net.inputs, bigger):
        net.blobs[name].data[...] = a
    expected = net.forward()
    got = program.module()(*[torch.from_numpy(a) for a in bigger])
    for name, g in zip(net.outputs, got):
        np.testing.assert_allclose(g.detach().numpy(), expected[name], rtol=1e-6, atol=1e-6,
                                   err_msg=name)


#: nets without outputs (every layer translates: losses and Accuracy, ArgMax with top_k > 1
#: through ONNX's TopK)
NO_ONNX_ROWS = {"Silence-two_bottoms"}
FIRST_OF_TYPE = [r for i, r in enumerate(EXPORTED)
                 if all(o.type != r.type for o in EXPORTED[:i])]


def check_onnx_row(row, tmp_path) -> None:
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    net, _ = row_net(row)
    feed = [net.blobs[name].data.copy() for name in net.inputs]
    expected = {k: v.copy() for k, v in net.forward().items()}
    try:
        export.to_onnx(net, str(tmp_path / "row.onnx"), feed)
    except export.ExportError:
        if f"{row.type}-{row.id}" in NO_ONNX_ROWS:
            return
        raise
    session = ort.InferenceSession(str(tmp_path / "row.onnx"),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: a for i, a in zip(session.get_inputs(), feed)})
    for name, g in zip(net.outputs, got):
        np.testing.assert_allclose(g, expected[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")  # inside torch.onnx
@pytest.mark.parametrize("row", FIRST_OF_TYPE, ids=[f"{r.type}-{r.id}" for r in FIRST_OF_TYPE])
def test_onnx_runtime_gives_the_nets_numbers(row, tmp_path):
    check_onnx_row(row, tmp_path)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")
@pytest.mark.parametrize("row", EXPORTED, ids=[f"{r.type}-{r.id}" for r in EXPORTED])
def test_onnx_runtime_gives_the_nets_numbers_every_row(row, tmp_path):
    check_onnx_row(row, tmp_path)


def test_save_needs_a_known_extension(tmp_path):
    with pytest.raises(export.ExportError, match="name it .onnx .ONNX. or .pt2"):
        export.save(lenet(), str(tmp_path / "net.bin"))
    assert not list(tmp_path.iterdir())


def test_program_weights_are_parameters_with_caffes_gradients():
    """The program is a port that fine-tunes in plain PyTorch: its weights are parameters
    named <layer>_<index>, and autograd gives them the gradients of the net's own backward."""
    from caffe.proto import files

    param = files.read_text(LENET, caffe_pb2.NetParameter())
    param.force_backward = True
    caffe.set_random_seed(5)
    net = caffe.Net(param, caffe.TEST)
    rng = np.random.default_rng(6)
    x = rng.standard_normal(net.blobs["data"].shape).astype(np.float32)
    r = rng.standard_normal(net.blobs["prob"].shape).astype(np.float32)
    module = export.to_torch(net, [x]).module()
    names = [n for n, _ in module.named_parameters()]
    assert names[:2] == ["conv1_0", "conv1_1"] and len(names) == 8
    (module(torch.from_numpy(x))[0] * torch.from_numpy(r)).sum().backward()
    net.blobs["data"].data[...] = x
    net.forward()
    net.blobs["prob"].diff[...] = r
    net.backward()
    for name, p in module.named_parameters():
        layer, index = name.rsplit("_", 1)
        np.testing.assert_allclose(p.grad.numpy(), net.params[layer][int(index)].diff,
                                   rtol=1e-4, atol=1e-6, err_msg=name)


def test_batch_norm_statistics_and_frozen_weights_are_not_trained():
    from google.protobuf import text_format

    param = text_format.Parse("""
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" }
        layer { name: "ip" type: "InnerProduct" bottom: "y" top: "z" param { lr_mult: 0 }
          param { lr_mult: 1 } inner_product_param { num_output: 2 } }""",
                              caffe_pb2.NetParameter())
    module = export.to_torch(caffe.Net(param, caffe.TEST)).module()
    learned = {n: p.requires_grad for n, p in module.named_parameters()}
    assert learned == {"bn_0": False, "bn_1": False, "bn_2": False, "ip_0": False,
                       "ip_1": True}


def test_a_program_fine_tuned_in_pytorch_goes_back_into_the_net(tmp_path):
    net = lenet(batch=2)
    module = export.to_torch(net).module()
    w0 = net.params["conv1"][0].data.copy()
    x = torch.from_numpy(np.random.default_rng(8).standard_normal((2, 1, 28, 28)).astype(
        np.float32))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        (-module(x)[0][:, 3].log().sum()).backward()
        optimizer.step()
    np.testing.assert_array_equal(net.params["conv1"][0].data, w0)  # the program's own copy
    net.blobs["data"].data[...] = x.numpy()
    before = net.forward()["prob"].copy()
    export.copy_parameters(net, module)
    net.save(str(tmp_path / "tuned.caffemodel"))
    tuned = caffe.Net(LENET, caffe.TEST, weights=str(tmp_path / "tuned.caffemodel"))
    tuned.blobs["data"].reshape(2, 1, 28, 28)
    tuned.reshape()
    tuned.blobs["data"].data[...] = x.numpy()
    after = tuned.forward()["prob"]
    with torch.no_grad():
        np.testing.assert_allclose(after, module(x)[0].numpy(), rtol=1e-5, atol=1e-7)
    assert np.abs(after[:, 3] - before[:, 3]).max() > 1e-3  # the fine-tuning changed it
    with pytest.raises(export.ExportError, match="no 'ip2_1' .layer 'ip2', parameter 1."):
        export.copy_parameters(net, {k: v for k, v in module.state_dict().items()
                                     if k != "ip2_1"})


def test_a_shared_weight_is_one_parameter():
    from google.protobuf import text_format

    param = text_format.Parse("""
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "a" type: "InnerProduct" bottom: "x" top: "y" param { name: "w" }
          inner_product_param { num_output: 3 bias_term: false
            weight_filler { type: "gaussian" std: 1 } } }
        layer { name: "b" type: "InnerProduct" bottom: "y" top: "z" param { name: "w" }
          inner_product_param { num_output: 3 bias_term: false } }""",
                              caffe_pb2.NetParameter())
    net = caffe.Net(param, caffe.TEST)
    module = export.to_torch(net).module()
    assert [n for n, _ in module.named_parameters()] == ["a_0"]
    x = torch.randn(2, 3)
    module(x)[0].sum().backward()  # both uses of w reach its one gradient
    w = module.a_0.detach().clone()
    expected = torch.autograd.functional.jacobian(
        lambda w: ((x @ w.T) @ w.T).sum(), w)
    np.testing.assert_allclose(module.a_0.grad.numpy(), expected.numpy(), rtol=1e-5)
    with torch.no_grad():
        module.a_0.mul_(2)
    export.copy_parameters(net, module)
    np.testing.assert_allclose(net.params["b"][0].data, 2 * w.numpy(), rtol=1e-6)
