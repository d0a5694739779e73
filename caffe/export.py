"""Export a net for use without neocaffe: a PyTorch ``ExportedProgram`` (``.pt2``) or ONNX.

The exported computation is the net's own forward, the same layer code (so the same numbers),
traced by ``torch.export`` at the input shapes given (by default the input blobs' shapes). The
weights are parameters of the program, named ``<layer>_<index>``: ``program.module()`` is a
PyTorch module to run or fine-tune, whose autograd gradients are those of the net's backward
(weights with ``lr_mult: 0`` and BatchNorm's statistics do not require grad; the forward is the
TEST phase's: Dropout off, BatchNorm on its stored statistics). A ``.pt2`` file loads with plain
PyTorch (``torch.export.load(path).module()(x)``); an ``.onnx`` file runs in ONNX Runtime,
OpenCV DNN or TensorRT, and needs the ``onnx`` and ``onnxscript`` packages to write.

What can be exported: a TEST-phase net whose inputs are ``Input`` layers (or the legacy
``input`` fields), i.e. a deploy net. Layers that read data themselves (Data, ImageData, HDF5,
MemoryData, WindowData, DummyData, Python layers without bottoms) or write files (HDF5Output)
are refused, as a trace would freeze one batch of their data into the program, and so is
Filter, whose top shape depends on values. Range checks of labels and indices are left out of
the program (they read values on the host). A Python layer is traced like any other layer when
it computes with torch operations on ``blob.tensor``; one that computes with NumPy cannot be
traced, and the error names it.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from caffe._common import tracing
from caffe.blob import Blob
from caffe.errors import CaffeError, PythonLayerError
from caffe.layer import Phase
from caffe.net import Net

_TORCH = tuple(int(part) for part in torch.__version__.split(".")[:2])

#: layer types whose tops come from files or generators, not from the net's inputs
READS_DATA = frozenset({"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData",
                        "DummyData", "AnnotatedData"})
#: layer types with effects outside the net
WRITES_FILES = frozenset({"HDF5Output"})
#: layer types whose top shapes depend on the values of a bottom
VALUE_SHAPED = frozenset({"Filter"})


class ExportError(CaffeError, ValueError):
    """The net cannot be exported as it is (the message says which layer and what to do)."""


def _check_exportable(net: Net) -> None:
    if net.phase != Phase.TEST:
        raise ExportError(f"Net '{net.name}' is in phase TRAIN; export the TEST phase "
                          "(caffe.Net(deploy_prototxt, caffe.TEST, weights=...))")
    for name, layer in zip(net._layer_names, net.layers):
        reads = layer.type in READS_DATA or (layer.type == "Python" and not net.bottom_names[name])
        if reads:
            raise ExportError(
                f"Layer '{name}' ({layer.type}) reads its own data, which an exported program "
                "cannot do; export the deploy net, whose inputs are Input layers")
        if layer.type in WRITES_FILES:
            raise ExportError(f"Layer '{name}' ({layer.type}) writes files; remove it from the "
                              "net to export")
        if layer.type in VALUE_SHAPED:
            raise ExportError(f"Layer '{name}' ({layer.type}): the shape of its top depends on "
                              "the values of its bottoms, which an exported program of fixed "
                              "shapes cannot hold; export the net up to its bottoms")


def parameter_name(layer: str, index: int) -> str:
    """The name of parameter blob ``index`` of ``layer`` in an exported program."""
    return f"{layer}_{index}".replace(".", "_").replace("/", "_")


def _parameter_blobs(net: Net) -> list[tuple[str, Blob, bool, str]]:
    """(program name, blob, learned, which) for each parameter blob of ``net``, once: a blob shared
    by several layers (``param { name }``) is named after the first. Not learned: BatchNorm's
    statistics and blobs with ``lr_mult: 0``."""
    seen: set[int] = set()
    found = []
    for name, layer in zip(net._layer_names, net.layers):
        specs = layer.layer_param.param
        for i, blob in enumerate(layer.blobs):
            if id(blob) in seen:
                continue
            seen.add(id(blob))
            learned = layer.type != "BatchNorm" and (
                i >= len(specs) or not specs[i].HasField("lr_mult") or specs[i].lr_mult != 0)
            found.append((parameter_name(name, i), blob, learned,
                          f"layer '{name}', parameter {i}"))
    return found


def copy_parameters(net: Net, weights) -> None:
    """Copy weights back from a program (its ``module()``, or a ``state_dict``, e.g. after
    fine-tuning in PyTorch) into ``net``'s parameter blobs, matched by ``parameter_name``;
    ``net.save(path)`` then writes a caffemodel that BVLC Caffe loads. Every parameter blob of
    ``net`` must be there, with its shape."""
    state = weights.state_dict() if isinstance(weights, nn.Module) else dict(weights)
    for key, blob, _, which in _parameter_blobs(net):
        if key not in state:
            raise ExportError(f"copy_parameters: no '{key}' ({which}) among the program's "
                              "weights")
        value = state[key]
        if tuple(value.shape) != blob.shape:
            raise ExportError(f"copy_parameters: '{key}' has shape {tuple(value.shape)}, "
                              f"{which} has {blob.shape}")
        blob.tensor.copy_(value.detach())


class NetModule(nn.Module):
    """``net``'s forward as an ``nn.Module``: ``module(*inputs)`` takes one tensor per net input
    (``net.inputs`` order; a new shape reshapes the net) and returns the output blobs
    (``net.outputs`` order) as a tuple. It runs a copy of the net whose weights are this
    module's parameters, copies of ``net``'s: using or training it never changes ``net``.
    Autograd follows its ops only while ``torch.export`` traces it; called directly it runs
    the net's forward without recording, as the net does."""

    def __init__(self, net: Net) -> None:
        super().__init__()
        _check_exportable(net)
        self.net = net._clone()
        self._param_blobs = []
        for attr, blob, learned, _ in _parameter_blobs(self.net):
            weight = blob.tensor.detach().clone()  # the program's own: training it later
            self.register_parameter(attr, nn.Parameter(weight, requires_grad=learned))
            self._param_blobs.append((blob, attr))
        self.input_names = list(net.inputs)
        self.output_names = list(net.outputs)
        # inputs a layer computes in place on: the net gets a copy, the caller's tensor stays
        self._written_inputs = {name for name in self.input_names for layer in net._layer_names
                                if name in net.bottom_names[layer]
                                and name in net.top_names[layer]}

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        net = self.net
        if len(inputs) != len(self.input_names):
            raise ExportError(f"Net '{net.name}' takes {len(self.input_names)} inputs "
                              f"{self.input_names}, got {len(inputs)}")
        for blob, attr in self._param_blobs:  # (torch.export swaps in its own tensors)
            blob.swap_tensor(getattr(self, attr))
        reshape = False
        for name, x in zip(self.input_names, inputs):
            blob = net.blobs[name]
            if tracing() or tuple(x.shape) != blob.shape:
                blob.reshape(*x.shape)
                reshape = True
            x = x.to(device=blob.tensor.device, dtype=blob.tensor.dtype)
            blob.tensor = x.clone() if name in self._written_inputs else x
        if reshape:
            net.reshape()
        net._forward(compute_loss=False)
        return tuple(net.blobs[name].tensor for name in self.output_names)


def _example_inputs(net: Net, inputs: Sequence | None) -> tuple[torch.Tensor, ...]:
    if inputs is None:
        return tuple(torch.zeros(net.blobs[n].shape) for n in net.inputs)
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        inputs = [inputs]
    return tuple(torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(
        x, torch.Tensor) else x.float() for x in inputs)


def _batch_dims(args: tuple[torch.Tensor, ...]) -> tuple[tuple, tuple | None]:
    """Examples and torch.export dynamic shapes that leave the first dimension open for the
    inputs that share the first input's batch size (a batch of 1 is traced as 2: torch fixes
    sizes 0 and 1)."""
    if not args or not args[0].dim():
        return args, None
    n = args[0].shape[0]
    batch = torch.export.Dim("batch", min=1)
    examples, dims = [], []
    for x in args:
        if x.dim() and x.shape[0] == n:
            examples.append(x.expand(2, *x.shape[1:]).contiguous() if n == 1 else x)
            dims.append({0: batch})
        else:
            examples.append(x)
            dims.append(None)
    return tuple(examples), tuple(dims)


def to_torch(net: Net, inputs: Sequence | None = None,
             dynamic_batch: bool = False) -> torch.export.ExportedProgram:
    """``net``'s forward traced by ``torch.export`` at the shapes of ``inputs`` (arrays or
    tensors, one per net input; by default zeros shaped like the input blobs). With
    ``dynamic_batch`` the program takes any batch size (the first dimension of the inputs
    whose first dimension is the first input's). Save it with
    ``torch.export.save(program, "net.pt2")``; run it with ``program.module()(*inputs)``."""
    if _TORCH < (2, 5):
        raise ExportError(f"exporting needs torch >= 2.5 (torch.export with non-strict "
                          f"tracing); this is torch {torch.__version__}")
    module = NetModule(net)
    args = _example_inputs(net, inputs)
    dims = None
    if dynamic_batch:
        args, batch_dims = _batch_dims(args)
        dims = None if batch_dims is None else (batch_dims,)
    try:
        program = torch.export.export(module, args, dynamic_shapes=dims, strict=False)
    except PythonLayerError as e:
        raise ExportError(f"{e}. A Python layer is exported when it computes with torch "
                          "operations on blob.tensor (NumPy's blob.data cannot be traced)"
                          ) from e
    except CaffeError:
        raise
    except torch._dynamo.exc.UserError as e:
        if not dynamic_batch:
            raise
        raise ExportError(f"Net '{net.name}' cannot take a variable batch size: a layer "
                          "fixes it (a Reshape, Slice or Crop on the first axis, a parameter "
                          "spanning it, a loss); export it with a fixed batch (torch.export: "
                          f"{str(e).splitlines()[0]})") from e
    except Exception as e:
        raise ExportError(f"Net '{net.name}' could not be traced for export: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                          ) from e
    _drop_unused_buffers(program)
    return program


def _drop_unused_buffers(program: torch.export.ExportedProgram) -> None:
    """Remove the zero-filled buffers the trace recorded when the blobs were reshaped to the
    traced shapes and that no operation then used (the layers replaced them): one allocation
    per blob and run otherwise."""
    graph = program.graph
    unused = [node for node in graph.nodes if node.op == "call_function" and not node.users
              and node.target is torch.ops.aten.zeros.default]
    for node in unused:
        graph.erase_node(node)
    if unused:
        program.graph_module.recompile()


def _onnx_stable_sort(self, dim: int = -1, descending: bool = False, stable: bool = True):
    """``aten.sort.stable`` in ONNX: TopK over the whole axis, which by the ONNX definition
    puts the lower index first among equal values, as a stable sort does (ArgMax with
    ``top_k`` > 1 sorts its reversed entries so)."""
    from onnxscript import opset18 as op

    whole = op.Shape(self, start=dim, end=dim + 1 if dim != -1 else None)
    return op.TopK(self, whole, axis=dim, largest=1 if descending else 0, sorted=1)


def to_onnx(net: Net, path: str, inputs: Sequence | None = None,
            opset_version: int | None = None, dynamic_batch: bool = False) -> None:
    """Write ``net`` as an ONNX model to ``path`` (input and output names are the blob names,
    see ``onnx_output_names``; shapes and ``dynamic_batch`` as in ``to_torch``). Needs the
    ``onnx`` and ``onnxscript`` packages. A part ONNX cannot express raises ExportError;
    ``to_torch`` holds it."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"writing ONNX needs the packages onnx and onnxscript ({e}); "
                          "pip install onnx onnxscript") from None
    if not net.outputs:
        raise ExportError(f"Net '{net.name}' has no outputs (every top is consumed or "
                          "silenced); an ONNX model needs at least one")
    program = to_torch(net, inputs, dynamic_batch)
    kwargs = {} if opset_version is None else {"opset_version": opset_version}
    if "custom_translation_table" in inspect.signature(torch.onnx.export).parameters:
        kwargs["custom_translation_table"] = {torch.ops.aten.sort.stable: _onnx_stable_sort}
    quiet = logging.getLogger("torch.onnx")  # its notes on torchvision's ops, not ours
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        onnx_program = torch.onnx.export(
            program, dynamo=True, input_names=list(net.inputs),
            output_names=onnx_output_names(net), verbose=False, **kwargs)
    except Exception as e:
        raise ExportError(
            f"Net '{net.name}' was traced, but ONNX has no translation for part of it "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "the PyTorch program (caffe.export.to_torch, a .pt2 file) holds every layer") from e
    finally:
        quiet.setLevel(level)
    if dynamic_batch:
        _name_batch_dim(onnx_program.model)
    onnx_program.save(str(path))  # (weights past 2 GB go to a file named after it)


def _name_batch_dim(model) -> None:
    """Call the open first dimension of the first input ``batch`` throughout ``model`` (an
    onnx_ir model; torch names it after its internal symbol, such as ``s21``)."""
    import onnx_ir as ir

    first = model.graph.inputs[0].shape[0] if model.graph.inputs else None
    if not isinstance(first, ir.SymbolicDim):
        return
    values = list(model.graph.inputs) + [v for node in model.graph for v in node.outputs]
    for v in values:
        if v.shape is not None and any(d == first for d in v.shape):
            v.shape = ir.Shape([ir.SymbolicDim("batch") if d == first else d for d in v.shape])


def onnx_output_names(net: Net) -> list[str]:
    """The ONNX names of ``net``'s outputs: their blob names, with ``_output`` added to an
    output that is also an input (one ONNX graph cannot use a name twice)."""
    inputs = set(net.inputs)
    return [f"{name}_output" if name in inputs else name for name in net.outputs]


def save(net: Net, path: str, inputs: Sequence | None = None,
         dynamic_batch: bool = False) -> None:
    """Export ``net`` to ``path``: ONNX for ``.onnx``, a PyTorch ExportedProgram for
    ``.pt2``."""
    if not str(path).endswith((".onnx", ".pt2")):
        raise ExportError(f"cannot tell the format of '{path}': name it .onnx (ONNX) or .pt2 "
                          "(a PyTorch ExportedProgram)")
    if str(path).endswith(".onnx"):
        to_onnx(net, path, inputs, dynamic_batch=dynamic_batch)
        return
    program = to_torch(net, inputs, dynamic_batch)
    tmp = f"{path}.{os.getpid()}.tmp.pt2"
    torch.export.save(program, tmp)
    os.replace(tmp, path)
