"""Net: a DAG of layers built from a NetParameter, with Caffe's construction rules.

Construction follows Caffe's Net::Init: the net state (phase, level, stages) filters layers by
their include/exclude rules; a Split layer is inserted for every blob consumed by more than one
layer (named ``<blob>_<producer>_<top index>_split``); layers are set up in order; in-place
layers reuse their bottom blob; parameters named alike are shared; and a backward pass is only
planned where a loss depends on it (``force_backward`` and ``propagate_down`` adjust that).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from caffe import model_io
from caffe._common import LOG, STATE, root_solver, tracing
from caffe.blob import RELEASED, Blob
from caffe.errors import (
    CaffeError,
    LayerSetupError,
    NetDefinitionError,
    NumericalError,
    PythonLayerError,
    ShapeMismatchError,
    UnknownLayerTypeError,
    UnknownNameError,
    also,
    with_device_hint,
)
from caffe.layer import PASS, Layer, Phase, ReshapeGate
from caffe.proto import caffe_pb2, files, upgrade
from caffe.registry import layer_class


# ---------------------------------------------------------------------------- state rules
def state_meets_rule(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule,
                     layer_name: str | None = None) -> bool:
    """Caffe's StateMeetsRule: phase, min/max level, and every stage / not_stage must agree.
    With ``layer_name``, the first disagreement is logged as Caffe logs it (phases as numbers,
    and Caffe's wording "is above the min_level" for a level below it)."""
    why = ""
    stages = set(state.stage)
    if rule.HasField("phase") and rule.phase != state.phase:
        why = f"The NetState phase ({state.phase}) differed from the phase ({rule.phase})"
    elif rule.HasField("min_level") and state.level < rule.min_level:
        why = f"The NetState level ({state.level}) is above the min_level ({rule.min_level})"
    elif rule.HasField("max_level") and state.level > rule.max_level:
        why = f"The NetState level ({state.level}) is above the max_level ({rule.max_level})"
    elif missing := [s for s in rule.stage if s not in stages]:
        why = f"The NetState did not contain stage '{missing[0]}'"
    elif present := [s for s in rule.not_stage if s in stages]:
        why = f"The NetState contained a not_stage '{present[0]}'"
    if why and layer_name is not None:
        LOG.info("%s specified by a rule in layer %s", why, layer_name)
    return not why


def filter_net(param: caffe_pb2.NetParameter, log: bool = False) -> caffe_pb2.NetParameter:
    """The layers of ``param`` that its ``state`` includes (Caffe's FilterNet). With ``log``,
    each rule a layer fails is logged as Caffe logs it (rules are tried in order: exclude
    rules until one is met, include rules until one is met)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    out.ClearField("layer")
    for lp in param.layer:
        if lp.include and lp.exclude:
            raise NetDefinitionError(
                f"Layer '{lp.name}' ({lp.type}) has both include and exclude rules; "
                "specify only one of them")
        name = lp.name if log else None
        included = not lp.include
        if any(state_meets_rule(param.state, r, name) for r in lp.exclude):
            included = False
        if any(state_meets_rule(param.state, r, name) for r in lp.include):
            included = True
        if included:
            out.layer.add().CopyFrom(lp)
    return out


def _without_blobs(param: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """``param`` without weights, for the log (a binary net definition may carry them)."""
    if not any(len(lp.blobs) for lp in param.layer):
        return param
    light = caffe_pb2.NetParameter()
    light.CopyFrom(param)
    for lp in light.layer:
        lp.ClearField("blobs")
    return light


# ---------------------------------------------------------------------------- splits
def split_layer_name(layer_name: str, blob_name: str, top_index: int) -> str:
    return f"{blob_name}_{layer_name}_{top_index}_split"


def split_blob_name(layer_name: str, blob_name: str, top_index: int, split_index: int) -> str:
    return f"{blob_name}_{layer_name}_{top_index}_split_{split_index}"


def insert_splits(param: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """Insert a Split layer after every top consumed more than once (a loss weight on the top
    counts as one use), renaming the consumers' bottoms (Caffe's InsertSplits)."""
    last_top: dict[str, tuple[int, int]] = {}
    source_of: dict[tuple[int, int], tuple[int, int]] = {}
    uses: dict[tuple[int, int], int] = {}
    loss_w: dict[tuple[int, int], float] = {}
    for i, lp in enumerate(param.layer):
        for j, name in enumerate(lp.bottom):
            if name not in last_top:
                raise NetDefinitionError(
                    f"Layer '{lp.name}' ({lp.type}) bottom {j} is the unknown blob '{name}': no "
                    "earlier layer produces it. Check the spelling, the layer order, and the "
                    "include/exclude rules for this phase")
            src = last_top[name]
            source_of[(i, j)] = src
            uses[src] = uses.get(src, 0) + 1
        for j, name in enumerate(lp.top):
            last_top[name] = (i, j)
        for j in range(min(len(lp.loss_weight), len(lp.top))):
            src = last_top[lp.top[j]]
            loss_w[src] = lp.loss_weight[j]
            if lp.loss_weight[j]:
                uses[src] = uses.get(src, 0) + 1
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    out.ClearField("layer")
    next_split: dict[tuple[int, int], int] = {}
    for i, lp in enumerate(param.layer):
        new = out.layer.add()
        new.CopyFrom(lp)
        for j, name in enumerate(lp.bottom):
            src = source_of[(i, j)]
            if uses.get(src, 0) > 1:
                k = next_split.get(src, 0)
                next_split[src] = k + 1
                new.bottom[j] = split_blob_name(param.layer[src[0]].name, name, src[1], k)
        for j, name in enumerate(lp.top):
            count = uses.get((i, j), 0)
            if count > 1:
                split = out.layer.add()
                split.name = split_layer_name(lp.name, name, j)
                split.type = "Split"
                split.bottom.append(name)
                weight = loss_w.get((i, j), 0.0)
                for k in range(count):
                    split.top.append(split_blob_name(lp.name, name, j, k))
                    if weight:
                        split.loss_weight.append(weight if k == 0 else 0.0)
                if weight:
                    new.ClearField("loss_weight")
                    next_split[(i, j)] = next_split.get((i, j), 0) + 1
    return out


# ---------------------------------------------------------------------------- layer creation
def _import_python_layer(lp: caffe_pb2.LayerParameter) -> type:
    pp = lp.python_param
    if not pp.module or not pp.layer:
        raise LayerSetupError(
            f"Layer '{lp.name}' (Python) needs python_param {{ module: ... layer: ... }}; got "
            f"module='{pp.module}' layer='{pp.layer}'")
    try:
        module = importlib.import_module(pp.module)
    except Exception as e:
        try:
            found = importlib.util.find_spec(pp.module)
        except Exception:  # a parent package that fails to import
            found = None
        if found is not None:  # the module is there: its own code or one of its imports failed
            raise also(PythonLayerError(
                f"Layer '{lp.name}' (Python): module '{pp.module}' ({found.origin}) was found, "
                f"but importing it failed: {type(e).__name__}: {e}"
                + (" (a module it imports: install it, or add its folder to PYTHONPATH)"
                   if isinstance(e, ImportError) else "")), type(e)) from e
        raise also(PythonLayerError(
            f"Layer '{lp.name}' (Python): cannot import module '{pp.module}' "
            f"({type(e).__name__}: {e}). The module must be importable from sys.path "
            f"(add its folder to PYTHONPATH). sys.path = {sys.path}"), type(e)) from e
    try:
        cls = getattr(module, pp.layer)
    except AttributeError:
        raise also(PythonLayerError(
            f"Layer '{lp.name}' (Python): module '{pp.module}' ({getattr(module, '__file__', '')}"
            f") has no class '{pp.layer}'" + (
                " (module '__main__' is the program that builds the net: it finds only layers "
                "defined in that script; for caffe train or other programs put the class in a "
                "module of its own, e.g. my_layers.py next to the prototxt)"
                if pp.module == "__main__" else "")), AttributeError) from None
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise PythonLayerError(
            f"Layer '{lp.name}' (Python): '{pp.module}.{pp.layer}' must be a class derived from "
            "caffe.Layer")
    return cls


def create_layer(lp: caffe_pb2.LayerParameter, phase: Phase,
                 allow_python_layers: bool = True) -> Layer:
    """Instantiate the layer class for ``lp`` (a Python layer's class comes from its module)."""
    if lp.type == "Python":
        if not allow_python_layers:
            raise PythonLayerError(
                f"Layer '{lp.name}' is a Python layer (module '{lp.python_param.module}'), and "
                "this net was loaded with allow_python_layers=False; only load it that way if "
                "you trust the prototxt")
        cls = _import_python_layer(lp)
        try:
            layer = cls(lp, phase)
        except TypeError:
            layer = cls(lp)
        layer.type_name = "Python"
    else:
        layer = layer_class(lp.type, lp.name)(lp, phase)
    layer.phase = phase
    layer.param_str = lp.python_param.param_str
    return layer


def _describe(layer: Layer) -> str:
    if layer.type == "Python":
        return (f"Layer '{layer.layer_param.name}' (Python, module "
                f"'{layer.layer_param.python_param.module}',"
                f" class '{type(layer).__name__}')")
    return f"Layer '{layer.layer_param.name}' ({layer.type})"


_SIGNATURES = ("setup(self, bottom, top), reshape(self, bottom, top), forward(self, bottom, "
               "top) and backward(self, top, propagate_down, bottom)")


def python_layer_hint(stage: str, e: BaseException, bottom: Sequence[Blob],
                       top: Sequence[Blob], lp: caffe_pb2.LayerParameter) -> str:
    """What a Python layer's author most likely got wrong, for the usual mistakes: a blob
    list used as a blob, a method with Caffe's arguments missing, a top never shaped."""
    msg = str(e)
    if isinstance(e, AttributeError) and "'list' object has no attribute" in msg:
        return (f" (bottom and top are lists of blobs, one per bottom / top line of the layer: "
                f"this layer has {len(bottom)} bottom(s) and {len(top)} top(s), so write "
                "bottom[0].data, top[0].reshape(...), ...)")
    if isinstance(e, TypeError) and any(f"{m}()" in msg for m in ("setup", "reshape",
                                                                   "forward", "backward")):
        return f" (Caffe calls {_SIGNATURES})"
    if isinstance(e, ValueError) and "broadcast" in msg:
        def shapes(names, blobs) -> str:
            return ", ".join(f"'{n}' {tuple(b.shape)}" for n, b in zip(names, blobs))

        hint = f" (bottoms: {shapes(lp.bottom, bottom)}; tops: {shapes(lp.top, top)}"
        unshaped = [n for n, b in zip(lp.top, top) if b.count == 0 or not b.shape]
        if unshaped and stage == "forward":
            hint += (f"; top {unshaped} has no shape yet: give each top its shape in "
                     "reshape(), e.g. top[0].reshape(*bottom[0].data.shape)")
        return hint + ")"
    return ""


def _raise_from(layer: Layer, stage: str, e: BaseException, bottom: Sequence[Blob] = (),
                top: Sequence[Blob] = ()) -> None:
    """Re-raise an exception from a layer's code with the layer named (the original stays
    attached as ``__cause__``, with its traceback); for a Python layer, with a hint at the
    usual mistakes (given its ``bottom`` and ``top`` blobs). The error raised is also an
    instance of the original's class, as pycaffe let a Python layer's exception through."""
    if isinstance(e, CaffeError) and f"'{layer.layer_param.name}'" in str(e):
        raise e
    python = layer.type == "Python"
    hint = python_layer_hint(stage, e, bottom, top, layer.layer_param) if python else ""
    error = (PythonLayerError if python else LayerSetupError)(with_device_hint(
        f"{_describe(layer)} failed in {stage}: {type(e).__name__}: {e}{hint}"))
    raise also(error, type(e)) from e  # still caught by `except <what the layer raised>`


def vacated(layer: Layer, bottom: Sequence[Blob], top: Sequence[Blob],
            propagate_down: Sequence[bool]) -> tuple[tuple[Blob, ...], tuple[Blob, ...]]:
    """(tops, bottoms) whose data, and whose diffs, a CPU pass lets go of just before the layer
    replaces them (``Layer.vacates``): its tops before forward and the diffs of the bottoms it
    propagates to before backward, in-place ones excepted. Freed first, that memory is what
    the allocator hands the layer's new tensor; held until the assignment, every blob would
    alternate between two buffers, the second one cold in cache."""
    tops, diffs = layer.vacates()
    return (tuple(t for t in top if tops and bottom and t not in bottom),
            tuple(b for b, need in zip(bottom, propagate_down)
                  if diffs and need and b not in top))


def _abs_mean(t: torch.Tensor) -> float:
    """Mean absolute value (Caffe's asum / count), 0 for an empty blob."""
    return float(t.abs().mean()) if t.numel() else 0.0


# ---------------------------------------------------------------------------- the Net
class _IdsPerLayer(list):
    """The blob indices of each layer's bottoms (or tops): ``ids[i]`` inside the net, and
    ``ids(i)`` (a copy) as pycaffe's ``net._bottom_ids(i)`` / ``net._top_ids(i)``."""

    def __call__(self, layer_index: int) -> list[int]:
        return list(self[layer_index])


class Net:
    """A network, as pycaffe's ``caffe.Net``.

    ``Net(prototxt, phase, level=0, stages=None, weights=None)``, or the legacy
    ``Net(prototxt, weights, phase)``. ``prototxt`` may also be a ``NetParameter``."""

    def __init__(self, network_file, *args, phase: int | None = None, level: int = 0,
                 stages: Iterable[str] | None = None, weights: str | None = None,
                 allow_python_layers: bool = True, strict: bool = True) -> None:
        usage = ("Net(network_file, phase, level=0, stages=None, weights=None) or "
                 "Net(network_file, weights_file, phase)")
        if args and isinstance(args[0], (str, bytes, os.PathLike)):  # the legacy form
            if len(args) > 2 or weights is not None:
                raise TypeError(usage)
            weights = os.fsdecode(args[0])
            args = args[1:]
        elif len(args) > 1:  # phase, level, stages, weights, as pycaffe takes them by position
            named = {"level": level != 0, "stages": stages is not None,
                     "weights": weights is not None}
            given = ("level", "stages", "weights")[:len(args) - 1]
            if len(args) > 4 or any(named[n] for n in given):
                raise TypeError(usage)
            level, stages, weights = (list(args[1:]) + [level, stages, weights][len(args) - 1:])
            args = args[:1]
        if args:
            if phase is not None:
                raise TypeError(usage)
            phase = args[0]
        if phase is None:
            raise TypeError("Net(...) needs a phase: caffe.TRAIN or caffe.TEST")
        extras: dict[str, dict] = {}
        if isinstance(network_file, caffe_pb2.NetParameter):
            param = caffe_pb2.NetParameter()
            param.CopyFrom(network_file)
            source = f"<NetParameter {param.name}>"
        else:
            source = str(network_file)
            param, extras = upgrade.read_net_file(source, strict)
        upgrade.upgrade_net_as_needed(param, source)
        param.state.phase = int(phase)
        param.state.level = int(level)
        if stages is not None:  # added to the file's stages, as Caffe's Net constructor does
            param.state.stage.extend(list(stages))
        self._source = source
        self._extra_params = extras
        self._init(param, Phase(int(phase)), allow_python_layers)
        if weights:
            self.copy_from(weights)

    # ------------------------------------------------------------------ construction
    def _init(self, in_param: caffe_pb2.NetParameter, phase: Phase,
              allow_python_layers: bool) -> None:
        self.phase = phase
        # Caffe's construction log (root solver only), line for line
        self._log_init = LOG.isEnabledFor(logging.INFO) and root_solver()
        filtered = filter_net(in_param, log=self._log_init)
        if self._log_init:
            LOG.info("Initializing net from parameters: \n%s", files.to_text(_without_blobs(
                filtered)))
        param = insert_splits(filtered)
        self._param = param
        self.name = param.name
        self._layers: list[Layer] = []
        self._layer_names: list[str] = []
        self._blobs: list[Blob] = []
        self._blob_names: list[str] = []
        self._blob_name_to_idx: dict[str, int] = {}
        self._blob_need_backward: list[bool] = []
        self._blob_loss_weights: list[float] = []
        self._bottom_vecs: list[list[Blob]] = []
        self._top_vecs: list[list[Blob]] = []
        self._bottom_ids = _IdsPerLayer()
        self._top_ids = _IdsPerLayer()
        self._bottom_need_backward: list[list[bool]] = []
        self._layer_need_backward: list[bool] = []
        self._inputs: list[int] = []
        self._params: list[Blob] = []
        self._param_owners: list[int] = []
        self._param_layer_indices: list[tuple[int, int]] = []
        self._param_display_names: list[str] = []
        self._param_names_index: dict[str, int] = {}
        self._param_id_vecs: list[list[int]] = []
        self._learnable_params: list[Blob] = []
        self._learnable_param_ids: list[int] = []
        self._params_lr: list[float] = []
        self._params_weight_decay: list[float] = []
        self._has_params_lr: list[bool] = []
        self._has_params_decay: list[bool] = []
        self._before_forward: list[Callable[[int], None]] = []
        self._after_forward: list[Callable[[int], None]] = []
        self._before_backward: list[Callable[[int], None]] = []
        self._after_backward: list[Callable[[int], None]] = []
        self.debug_info = bool(param.debug_info)
        #: stop with NumericalError naming the first layer and blob that produces NaN or Inf
        self.check_nan = False
        self._graph_runner = None
        available: dict[str, int] = {}
        names_seen: set[str] = set()
        memory_used = 0

        for li, lp in enumerate(param.layer):
            if lp.name in names_seen:
                LOG.warning("Layer name '%s' is used again by layer #%d in %s (net.layer_dict "
                            "keeps the last one)", lp.name, li, self._source)
            names_seen.add(lp.name)
            if not lp.HasField("phase"):
                lp.phase = phase
            if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
                raise NetDefinitionError(
                    f"Layer '{lp.name}' ({lp.type}) has {len(lp.propagate_down)} propagate_down "
                    f"values for {len(lp.bottom)} bottoms; give one per bottom or none")
            try:
                layer = create_layer(lp, phase, allow_python_layers)
            except UnknownLayerTypeError as e:
                raise UnknownLayerTypeError(f"{self._source}: {e}") from None
            except PythonLayerError as e:  # the module or class named in the file
                e.args = (f"{self._source}: {e}",)  # keeps its class (an ImportError too...)
                raise
            layer.extra_params = self._extra_params.get(lp.name, {})
            if self._log_init:
                LOG.info("Creating Layer %s", lp.name)
            self._layers.append(layer)
            self._layer_names.append(lp.name)
            bottoms, bottom_ids, bneed = [], [], []
            need_backward = False
            for j, bname in enumerate(lp.bottom):
                if bname not in available:
                    raise NetDefinitionError(
                        f"Layer '{lp.name}' ({lp.type}) bottom {j} '{bname}' is not available: "
                        "it was never produced, or another layer already consumed it")
                bid = available.pop(bname)
                if self._log_init:
                    LOG.info("%s <- %s", lp.name, bname)
                bottoms.append(self._blobs[bid])
                bottom_ids.append(bid)
                need = self._blob_need_backward[bid]
                if lp.propagate_down:
                    need = bool(lp.propagate_down[j])
                bneed.append(need)
                need_backward |= self._blob_need_backward[bid]
            tops, top_ids = [], []
            n_tops = len(lp.top)
            if type(layer).auto_top_blobs:
                n_tops = max(n_tops, type(layer).min_top_blobs or 0,
                             type(layer).exact_num_top_blobs or 0)
            for j in range(n_tops):
                if j < len(lp.top):
                    tname = lp.top[j]
                    if j < len(lp.bottom) and lp.bottom[j] == tname:
                        if not layer.may_compute_in_place():
                            raise NetDefinitionError(
                                f"Layer '{lp.name}' ({lp.type}) cannot compute in place (top "
                                f"'{tname}' is also its bottom): give the top a new name")
                        bid = bottom_ids[j]
                        if self._log_init:
                            LOG.info("%s -> %s (in-place)", lp.name, tname)
                        tops.append(self._blobs[bid])
                        top_ids.append(bid)
                        available[tname] = bid
                        continue
                    if tname in self._blob_name_to_idx:
                        raise NetDefinitionError(
                            f"Layer '{lp.name}' ({lp.type}) top {j} '{tname}' is produced by "
                            "several layers; a top may only reuse the name of the bottom at the "
                            "same index (in-place computation)")
                else:
                    tname = "(automatic)"
                if self._log_init:
                    LOG.info("%s -> %s", lp.name, tname)
                blob = Blob()
                bid = len(self._blobs)
                self._blobs.append(blob)
                self._blob_names.append(tname)
                self._blob_need_backward.append(False)
                if j < len(lp.top):
                    self._blob_name_to_idx[tname] = bid
                    available[tname] = bid
                tops.append(blob)
                top_ids.append(bid)
                if lp.type == "Input":
                    self._inputs.append(bid)
            self._bottom_vecs.append(layer.io_blobs(bottoms))
            self._top_vecs.append(layer.io_blobs(tops))
            self._bottom_ids.append(bottom_ids)
            self._top_ids.append(top_ids)
            self._bottom_need_backward.append(bneed)
            n_specs = len(lp.param)  # as written: a layer's setup may add specs (BatchNorm)
            try:
                layer.SetUp(self._bottom_vecs[-1], self._top_vecs[-1])
            except Exception as e:
                _raise_from(layer, "setup", e, self._bottom_vecs[-1], self._top_vecs[-1])
            for j, bid in enumerate(top_ids):
                while len(self._blob_loss_weights) <= bid:
                    self._blob_loss_weights.append(0.0)
                self._blob_loss_weights[bid] = layer._loss(j)
            for bid in top_ids:
                memory_used += self._blobs[bid].count
            if self._log_init:
                LOG.info("Setting up %s", lp.name)
                for bid in top_ids:
                    blob = self._blobs[bid]
                    LOG.info("Top shape: %s(%d)", "".join(f"{d} " for d in blob.shape),
                             blob.count)
                    if self._blob_loss_weights[bid]:
                        LOG.info("    with loss weight %g", self._blob_loss_weights[bid])
                LOG.info("Memory required for data: %d", memory_used * 4)
            n_params = len(layer.blobs)
            if n_specs > n_params:
                raise NetDefinitionError(
                    f"Layer '{lp.name}' ({lp.type}) has {n_specs} param specs but only "
                    f"{n_params} parameter blobs")
            default_spec = caffe_pb2.ParamSpec()
            prop = []
            for pid in range(n_params):
                spec = lp.param[pid] if pid < n_specs else default_spec
                pneed = spec.lr_mult != 0
                need_backward |= pneed
                prop.append(pneed)
            layer._param_propagate_down = prop
            self._param_id_vecs.append([])
            for pid in range(n_params):
                self._append_param(li, pid)
            self._layer_need_backward.append(need_backward)
            if need_backward:
                for bid in top_ids:
                    self._blob_need_backward[bid] = True

        self._plan_backward(param)
        self._outputs = sorted(available.values(), key=lambda b: self._blob_names[b])
        if self._log_init:
            for bid in self._outputs:
                LOG.info("This network produces output %s", self._blob_names[bid])
        self._share_weights()
        self._finish_plan()
        self._generation = STATE.generation
        if self._log_init:
            LOG.info("Network initialization done.")

    def _append_param(self, li: int, pid: int) -> None:
        lp = self._param.layer[li]
        layer = self._layers[li]
        spec = lp.param[pid] if pid < len(lp.param) else caffe_pb2.ParamSpec()
        pname = spec.name
        self._param_display_names.append(pname or str(pid))
        net_pid = len(self._params)
        self._params.append(layer.blobs[pid])
        self._param_id_vecs[li].append(net_pid)
        self._param_layer_indices.append((li, pid))
        if not pname or pname not in self._param_names_index:
            self._param_owners.append(-1)
            if pname:
                self._param_names_index[pname] = net_pid
            self._learnable_param_ids.append(len(self._learnable_params))
            self._learnable_params.append(layer.blobs[pid])
            self._has_params_lr.append(spec.HasField("lr_mult"))
            self._has_params_decay.append(spec.HasField("decay_mult"))
            self._params_lr.append(spec.lr_mult)
            self._params_weight_decay.append(spec.decay_mult)
            return
        owner = self._param_names_index[pname]
        self._param_owners.append(owner)
        oli, opid = self._param_layer_indices[owner]
        if self._log_init:
            LOG.info("Sharing parameters '%s' owned by layer '%s', param index %d", pname,
                     self._layer_names[oli], opid)
        this, other = layer.blobs[pid], self._layers[oli].blobs[opid]
        permissive = spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE
        if permissive and this.count != other.count:
            raise ShapeMismatchError(
                f"Cannot share param '{pname}' owned by layer '{self._layer_names[oli]}' with "
                f"layer '{lp.name}': counts differ ({other.count} vs {this.count}) "
                f"(shapes {other.shape} vs {this.shape})")
        if not permissive and this.shape != other.shape:
            raise ShapeMismatchError(
                f"Cannot share param '{pname}' owned by layer '{self._layer_names[oli]}' with "
                f"layer '{lp.name}': shapes differ ({other.shape} vs {this.shape}); use "
                "share_mode: PERMISSIVE to share by count")
        lid = self._learnable_param_ids[owner]
        self._learnable_param_ids.append(lid)
        for has, vals, field, what in (
            (self._has_params_lr, self._params_lr, "lr_mult", "lr_mult"),
            (self._has_params_decay, self._params_weight_decay, "decay_mult", "decay_mult"),
        ):
            if spec.HasField(field):
                value = getattr(spec, field)
                if has[lid] and vals[lid] != value:
                    raise NetDefinitionError(
                        f"Shared param '{pname}' has mismatched {what}: {vals[lid]} in its owner "
                        f"and {value} in layer '{lp.name}'")
                has[lid] = True
                vals[lid] = value

    def _share_weights(self) -> None:
        for net_pid, owner in enumerate(self._param_owners):
            if owner < 0:
                continue
            li, pid = self._param_layer_indices[net_pid]
            oblob = self._params[owner]
            layer = self._layers[li]
            if layer.blobs[pid].shape == oblob.shape:
                layer.blobs[pid] = oblob
            else:
                shared = Blob(*layer.blobs[pid].shape)
                shared.share_data(oblob)
                shared.share_diff(oblob)
                layer.blobs[pid] = shared
            self._params[net_pid] = layer.blobs[pid]

    def _plan_backward(self, param: caffe_pb2.NetParameter) -> None:
        """Which layers and bottoms need a backward (Caffe's loss-reachability pass)."""
        under_loss: set[str] = set()
        skip_backp: set[str] = set()
        names = self._blob_names
        for li in range(len(self._layers) - 1, -1, -1):
            layer = self._layers[li]
            contributes = False
            skip_propagate = True
            for j, bid in enumerate(self._top_ids[li]):
                bname = names[bid]
                if layer._loss(j) or bname in under_loss:
                    contributes = True
                if bname not in skip_backp:
                    skip_propagate = False
                if contributes and not skip_propagate:
                    break
            if self._layer_need_backward[li] and skip_propagate:
                self._layer_need_backward[li] = False
                self._bottom_need_backward[li] = [False] * len(self._bottom_ids[li])
            if not contributes:
                self._layer_need_backward[li] = False
            if self._log_init:
                LOG.info("%s %s backward computation.", self._layer_names[li],
                         "needs" if self._layer_need_backward[li] else "does not need")
            for j, bid in enumerate(self._bottom_ids[li]):
                if contributes:
                    under_loss.add(names[bid])
                else:
                    self._bottom_need_backward[li][j] = False
                if not self._bottom_need_backward[li][j]:
                    skip_backp.add(names[bid])
        if param.force_backward:
            for li, layer in enumerate(self._layers):
                self._layer_need_backward[li] = True
                refused = type(layer).refuses_force_backward(len(self._bottom_ids[li]))
                for j, bid in enumerate(self._bottom_ids[li]):
                    allow = j not in refused
                    self._bottom_need_backward[li][j] = self._bottom_need_backward[li][j] or allow
                    self._blob_need_backward[bid] = (self._blob_need_backward[bid]
                                                     or self._bottom_need_backward[li][j])
                layer._param_propagate_down = [True] * len(layer.blobs)

    def _finish_plan(self) -> None:
        """Precompute what the forward/backward loops need."""
        self._loss_layers = [li for li, layer in enumerate(self._layers)
                             if any(layer._loss_weights)]
        for li, layer in enumerate(self._layers):
            if not type(layer).has_backward:
                self._layer_need_backward[li] = False
            layer._need_backward = self._layer_need_backward[li]
            if self._layer_need_backward[li] and layer.uses_autograd():
                layer._record_bottoms = list(self._bottom_need_backward[li])
            else:
                layer._record_bottoms = None
        self._blobs_dict = OrderedDict(zip(self._blob_names, self._blobs))
        self._plan_diff_release()
        self._plan_folding()
        self._plan_reshape_skips()
        self._plan_vacating()

    def _plan_folding(self) -> None:
        """Let each BatchNorm apply the per-channel Scale that follows it in place (ResNet's
        BatchNorm + Scale pairs), as PyTorch's affine batch norm: one pass over the blob
        instead of two or more, each way (the BatchNorm keeps its input for the pair's
        backward, as the Scale would have kept a copy of its own). Where a backward is needed,
        only when the BatchNorm runs in place too: otherwise its top's diff, which a user may
        read after the backward, would have to be written as well; and never where only the
        Scale needs one (learning s and b above a BatchNorm that needs none): the net would not
        call the BatchNorm's backward, which does the pair's. The blobs and diffs hold the same
        values after the pair either way."""
        layers, need = self._layers, self._layer_need_backward
        self._fold_pairs: list[int] = []  # the BatchNorms that took the next layer's Scale
        for li in range(len(layers) - 1):
            bn, sc = layers[li], layers[li + 1]
            if bn.type != "BatchNorm":
                continue
            in_place = self._top_vecs[li][0] is self._bottom_vecs[li][0]
            foldable = need[li] == need[li + 1] and (in_place or not need[li])
            if (foldable and sc.type == "Scale"
                    and len(self._bottom_vecs[li + 1]) == 1
                    and self._bottom_vecs[li + 1][0] is self._top_vecs[li][0]
                    and self._top_vecs[li + 1][0] is self._top_vecs[li][0]):
                bn.fold_scale(sc, li)
                if sc.folded_into is bn:
                    self._fold_pairs.append(li)

    def _plan_diff_release(self) -> None:
        """Which diffs a releasing backward drops after each layer: the tops a layer produces
        (not those it computes in place) are read by no backward after its own, since the
        layers that write them (their consumers) and read-modify them (in-place layers) come
        later in the net. Kept: net inputs and outputs, tops with a loss weight (their diff
        holds the weight), and the tops of layers without bottoms (data layers: with
        force_backward their diff is the gradient a user asked for). Autograd-backed layers
        drop their recorded graph after their backward."""
        keep = set(self._inputs) | set(self._outputs)
        produced: set[int] = set()
        plan: list[tuple[Blob, ...]] = []
        for li, layer in enumerate(self._layers):
            drop = []
            for j, bid in enumerate(self._top_ids[li]):
                if layer._loss(j):
                    keep.add(bid)
                if bid not in produced:
                    produced.add(bid)
                    if self._bottom_ids[li]:
                        drop.append(bid)
            plan.append(drop)
        self._diff_release = [tuple(self._blobs[b] for b in drop if b not in keep)
                              for drop in plan]
        self._graph_release = [layer._record_bottoms is not None for layer in self._layers]
        self._no_release: list[tuple[Blob, ...]] = [()] * len(self._layers)
        self._no_graph_release = [False] * len(self._layers)

    def _plan_reshape_skips(self) -> None:
        """One ``ReshapeGate`` per layer: which reshapes may be skipped."""
        self._reshape_gates = [ReshapeGate(layer, self._bottom_vecs[li], self._top_vecs[li])
                               for li, layer in enumerate(self._layers)]

    def _plan_vacating(self) -> None:
        """The blobs each layer's CPU forward and backward let go of first (``vacated``)."""
        plan = [vacated(layer, self._bottom_vecs[li], self._top_vecs[li],
                        self._bottom_need_backward[li])
                for li, layer in enumerate(self._layers)]
        self._vacate_tops = [tops for tops, _ in plan]
        self._vacate_diffs = [diffs for _, diffs in plan]
        self._vacate_none: list[tuple[Blob, ...]] = [()] * len(self._layers)

    # ------------------------------------------------------------------ device
    def _sync_device(self) -> None:
        if self._generation == STATE.generation:
            return
        seen: set[int] = set()
        for blob in list(self._blobs) + [b for layer in self._layers for b in layer.blobs]:
            if id(blob) not in seen:
                seen.add(id(blob))
                blob.to(STATE.device)
        self._generation = STATE.generation

    # ------------------------------------------------------------------ core passes
    def _forward(self, start: int = 0, end: int | None = None,
                 compute_loss: bool = True) -> float:
        """Run layers ``start..end`` (inclusive) forward; returns the total weighted loss
        (0 without ``compute_loss``: reading it waits for the device)."""
        if end is None:
            end = len(self._layers) - 1
        self._sync_device()
        layers, bottoms, tops = self._layers, self._bottom_vecs, self._top_vecs
        gates = self._reshape_gates
        before, after = self._before_forward, self._after_forward
        li = start
        stage = "reshape"
        inspect = self.debug_info or self.check_nan
        vacate = (self._vacate_tops if STATE.device.type == "cpu" and not tracing()
                  else self._vacate_none)
        if not (inspect or before or after):
            PASS.fold_from, PASS.fold_to = start, end
        try:
            with contextlib.nullcontext() if tracing() else torch.no_grad():
                for li in range(start, end + 1):
                    for cb in before:
                        cb(li)
                    layer = layers[li]
                    stage = "reshape"
                    gates[li].reshape(layer, bottoms[li], tops[li])
                    stage = "forward"
                    for blob in vacate[li]:
                        blob.vacate()
                    layer._forward(bottoms[li], tops[li])
                    for cb in after:
                        cb(li)
                    if inspect:
                        self._inspect_forward(li)
        except Exception as e:
            for blob in vacate[li]:
                blob.refill_vacated()
            _raise_from(layers[li], stage, e, bottoms[li], tops[li])
        finally:
            PASS.fold_from, PASS.fold_to = 1, 0
        return self._loss(start, end) if compute_loss else 0.0

    def _loss(self, start: int = 0, end: int | None = None) -> float:
        """The weighted sum of the loss tops of layers ``start..end``."""
        return float(self._loss_tensor(start, end))

    def _loss_tensor(self, start: int = 0, end: int | None = None) -> torch.Tensor | float:
        """The same sum as a float64 tensor on the device (no wait for it), in the order and
        precision of ``_loss``; 0.0 when no loss layer is in range."""
        if end is None:
            end = len(self._layers) - 1
        loss: torch.Tensor | float = 0.0
        for li in self._loss_layers:
            if start <= li <= end:
                for w, top in zip(self._layers[li]._loss_weights, self._top_vecs[li]):
                    if w:
                        loss = loss + w * top.tensor.sum().double()
        return loss

    def _backward(self, start: int | None = None, end: int = 0,
                  release_diffs: bool = False) -> None:
        """Run layers ``start`` down to ``end`` (inclusive) backward; ``release_diffs`` drops
        intermediate diffs as soon as no later backward reads them (see forward_backward)."""
        if start is None:
            start = len(self._layers) - 1
        self._sync_device()
        layers, bottoms, tops = self._layers, self._bottom_vecs, self._top_vecs
        need, bneed = self._layer_need_backward, self._bottom_need_backward
        before, after = self._before_backward, self._after_backward
        li = start
        inspect = self.debug_info or self.check_nan
        # callbacks that read only parameter diffs (``param_diffs_only``) leave the plan alone
        plain = not inspect and all(
            getattr(cb, "param_diffs_only", False) for cb in (*before, *after))
        if release_diffs and plain:
            release, graphs = self._diff_release, self._graph_release
        else:  # nothing to drop: every diff stays, as in Caffe
            release, graphs = self._no_release, self._no_graph_release
        if plain:
            PASS.fold_from, PASS.fold_to = end, start
        order = self._after_backward_order(start, end) if after and plain else {}
        vacate = self._vacate_diffs if STATE.device.type == "cpu" else self._vacate_none
        try:
            with torch.no_grad():
                for li in range(start, end - 1, -1):
                    for cb in before:
                        cb(li)
                    if need[li]:
                        for blob in vacate[li]:
                            blob.vacate_diff()
                        layers[li].backward(tops[li], bneed[li], bottoms[li])
                        if graphs[li]:
                            layers[li]._graph = None
                        if inspect:
                            self._inspect_backward(li)
                    for blob in release[li]:
                        blob.release_diff()
                    if after:
                        for k in order.get(li, (li,)):
                            for cb in after:
                                cb(k)
        except Exception as e:
            _raise_from(layers[li], "backward", e, bottoms[li], tops[li])
        finally:
            PASS.fold_from, PASS.fold_to = 1, 0

    def _after_backward_order(self, start: int, end: int) -> dict[int, tuple[int, ...]]:
        """The layers whose ``after_backward`` callbacks run after layer ``i``'s backward,
        where that is not just ``i``: a Scale folded into the BatchNorm before it gets its
        parameter diffs from the BatchNorm's backward, so its callbacks wait for that."""
        order: dict[int, tuple[int, ...]] = {}
        for bn in self._fold_pairs:
            if end <= bn < start and self._layers[bn].applied_scale:
                order[bn + 1], order[bn] = (), (bn + 1, bn)
        return order

    def _check_finite(self, li: int, t: torch.Tensor, what: str, stage: str) -> None:
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            index = tuple(int(i) for i in bad.nonzero()[0])
            raise NumericalError(
                f"Layer '{self._layer_names[li]}' ({self._layers[li].type}) produced "
                f"{float(t[index])} in {what} during {stage} ({int(bad.sum())} of {t.numel()} "
                f"values are NaN or Inf; first at index {index}). Lower the learning rate, "
                "check this layer's inputs and parameters, or turn on debug_info to see the "
                "magnitudes layer by layer")

    def _inspect_forward(self, li: int) -> None:
        """debug_info log lines (Caffe's format) and the NaN/Inf check after a forward."""
        name = self._layer_names[li]
        for bid in self._top_ids[li]:
            b = self._blobs[bid]
            if self.check_nan:
                self._check_finite(li, b.tensor, f"top blob '{self._blob_names[bid]}' data",
                                   "forward")
            if self.debug_info:
                LOG.info("    [Forward] Layer %s, top blob %s data: %g", name,
                         self._blob_names[bid], _abs_mean(b.tensor))
        if self.debug_info:  # a param is shown by its name (param { name }), else its index
            for net_pid in self._param_id_vecs[li]:
                LOG.info("    [Forward] Layer %s, param blob %s data: %g", name,
                         self._param_display_names[net_pid],
                         _abs_mean(self._params[net_pid].tensor))

    def _inspect_backward(self, li: int) -> None:
        """debug_info log lines and the NaN/Inf check after a backward."""
        name = self._layer_names[li]
        for j, bid in enumerate(self._bottom_ids[li]):
            if self._bottom_need_backward[li][j]:
                b = self._blobs[bid]
                if self.check_nan:
                    self._check_finite(li, b.diff_tensor,
                                       f"bottom blob '{self._blob_names[bid]}' diff", "backward")
                if self.debug_info:
                    LOG.info("    [Backward] Layer %s, bottom blob %s diff: %g", name,
                             self._blob_names[bid], _abs_mean(b.diff_tensor))
        propagated = self._layers[li]._param_propagate_down
        for pid, net_pid in enumerate(self._param_id_vecs[li]):
            if not propagated[pid]:  # (lr_mult 0: nothing computed)
                continue
            p = self._params[net_pid]
            if self.check_nan:
                self._check_finite(li, p.diff_tensor, f"param blob {pid} diff", "backward")
            if self.debug_info:
                LOG.info("    [Backward] Layer %s, param blob %d diff: %g", name, pid,
                         _abs_mean(p.diff_tensor))

    def _log_param_norms(self) -> None:
        """Caffe's debug_info summary after a whole backward (at ERROR level, as Caffe logs
        it): the L1 and L2 norms of all learnable parameters' data and diffs, summed in
        float32 blob by blob."""
        sums = np.zeros(4, dtype=np.float32)
        for p in self._learnable_params:
            t, g = p.tensor.float(), p.diff_tensor.float()
            sums += np.array([t.abs().sum(), g.abs().sum(), (t * t).sum(), (g * g).sum()],
                             dtype=np.float32)
        LOG.error("    [Backward] All net params (data, diff): L1 norm = (%g, %g); L2 norm = "
                  "(%g, %g)", sums[0], sums[1], np.sqrt(sums[2]), np.sqrt(sums[3]))

    def forward_prefilled(self) -> float:
        return self._whole_forward()

    def forward_backward(self, release_diffs: bool = False) -> float:
        """Forward then backward over the whole net; returns the loss.

        ``release_diffs=True`` (what ``Solver.step`` does unless ``solver.keep_blob_diffs``)
        frees the diff of every intermediate blob as soon as backward no longer needs it, and
        the graphs of autograd-backed layers after their backward, so a training step holds
        about as much as autograd would. Parameter diffs, and the diffs of net inputs,
        outputs, loss tops and data-layer tops, stay; a released diff reads as zeros (with a
        warning, once). Without callbacks, ``debug_info`` and ``check_nan`` only: with any of
        them every diff stays, as in Caffe (callbacks marked ``param_diffs_only`` excepted;
        see ``after_backward``)."""
        return float(self._forward_backward_tensor(release_diffs))

    def _forward_backward_tensor(self, release_diffs: bool = False) -> torch.Tensor | float:
        """``forward_backward`` returning the loss as a device tensor: reading it (a wait for
        the device) is left to the caller, after it has queued more work."""
        runner = self._graph_runner
        if runner is not None and runner.usable():
            return runner.run("forward_backward", release_diffs)
        return self._forward_backward_eager(release_diffs)

    def _forward_backward_eager(self, release_diffs: bool = False) -> torch.Tensor | float:
        RELEASED.active = release_diffs
        try:
            self._forward(compute_loss=False)
            loss = self._loss_tensor()
            self._backward(release_diffs=release_diffs)
        finally:
            RELEASED.active = False
        if self.debug_info:
            self._log_param_norms()
        return loss

    def _whole_forward(self) -> float:
        runner = self._graph_runner
        if runner is not None and runner.usable():
            return runner.run("forward")
        return self._forward()

    def use_cuda_graph(self, enable: bool = True) -> None:
        """Replay whole passes as CUDA graphs in GPU mode (``caffe/cuda_graph.py``): a net of
        fixed shapes then costs one launch per pass instead of one per kernel. Each kind of
        call (forward, forward+backward) is captured on its second use and checked against
        an eager pass; a net that cannot be graphed, or whose replay differs, stays eager with
        a warning. No effect in CPU mode."""
        from caffe.cuda_graph import GraphRunner

        self._graph_runner = GraphRunner(self) if enable else None

    # ------------------------------------------------------------------ pycaffe API
    @property
    def blobs(self) -> OrderedDict[str, Blob]:
        """Blobs by name, in creation order (automatic split blobs included)."""
        return self._blobs_dict

    @property
    def layers(self) -> list[Layer]:
        return self._layers

    @property
    def layer_dict(self) -> OrderedDict[str, Layer]:
        return OrderedDict(zip(self._layer_names, self._layers))

    @property
    def params(self) -> OrderedDict[str, list[Blob]]:
        """Parameter blobs of every layer that has any, by layer name."""
        return OrderedDict((n, layer.blobs) for n, layer in zip(self._layer_names, self._layers)
                           if len(layer.blobs) > 0)

    @property
    def blob_loss_weights(self) -> OrderedDict[str, float]:
        return OrderedDict(zip(self._blob_names, self._blob_loss_weights))

    @property
    def inputs(self) -> list[str]:
        return [self._blob_names[i] for i in self._inputs]

    @property
    def outputs(self) -> list[str]:
        return [self._blob_names[i] for i in self._outputs]

    @property
    def top_names(self) -> OrderedDict[str, list[str]]:
        return OrderedDict((n, [self._blob_names[b] for b in ids])
                           for n, ids in zip(self._layer_names, self._top_ids))

    @property
    def bottom_names(self) -> OrderedDict[str, list[str]]:
        return OrderedDict((n, [self._blob_names[b] for b in ids])
                           for n, ids in zip(self._layer_names, self._bottom_ids))

    @property
    def learnable_params(self) -> list[Blob]:
        return self._learnable_params

    @property
    def params_lr(self) -> list[float]:
        return self._params_lr

    @property
    def params_weight_decay(self) -> list[float]:
        return self._params_weight_decay

    @property
    def layer_need_backward(self) -> list[bool]:
        return list(self._layer_need_backward)

    @property
    def bottom_need_backward(self) -> list[list[bool]]:
        return [list(v) for v in self._bottom_need_backward]

    def _layer_index(self, name: str) -> int:
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise UnknownNameError(f"net '{self.name}' has no layer named '{name}'; layers: "
                                   f"{self._layer_names}") from None

    def forward(self, blobs: Sequence[str] | None = None, start: str | None = None,
                end: str | None = None, **kwargs) -> dict[str, np.ndarray]:
        """Forward from layer ``start`` to ``end`` (names; default: the whole net). Keyword
        arguments fill input blobs. Returns ``{name: data}`` for the outputs (or ``end``'s
        tops) plus the blobs named in ``blobs``."""
        blobs = list(blobs or [])
        start_ind = self._layer_index(start) if start is not None else 0
        if end is not None:
            end_ind = self._layer_index(end)
            outputs = set(self.top_names[end] + blobs)
        else:
            end_ind = len(self._layers) - 1
            outputs = set(self.outputs + blobs)
        self._fill(kwargs, self.inputs, "data", "Input blob")
        if start_ind == 0 and end_ind == len(self._layers) - 1:
            self._whole_forward()
        else:
            self._forward(start_ind, end_ind)
        return {name: self.blobs[name].data for name in outputs}

    def _fill(self, arrays: dict, expected: list[str], attr: str, what: str) -> None:
        """Write keyword arrays into the named blobs' ``data`` or ``diff``; the names must be
        exactly ``expected`` and each array must have the blob's batch size."""
        if not arrays:
            return
        if set(arrays) != set(expected):
            raise ValueError(f"{what} arguments {sorted(arrays)} do not match the net's "
                             f"{'inputs' if attr == 'data' else 'outputs'} {expected}")
        for name, arr in arrays.items():
            blob = self.blobs[name]
            arr = np.asarray(arr)
            if arr.shape[:1] != blob.shape[:1]:
                raise ValueError(f"{what} '{name}' has {arr.shape[0] if arr.ndim else 0} items "
                                 f"but the blob's batch size is {blob.shape[0]}; reshape the "
                                 "blob first")
            getattr(blob, attr)[...] = arr

    def backward(self, diffs: Sequence[str] | None = None, start: str | None = None,
                 end: str | None = None, **kwargs) -> dict[str, np.ndarray]:
        """Backward from layer ``start`` down to ``end``. Keyword arguments fill output diffs.
        Returns ``{name: diff}`` for the inputs (or ``end``'s bottoms) plus ``diffs``."""
        diffs = list(diffs or [])
        start_ind = self._layer_index(start) if start is not None else len(self._layers) - 1
        if end is not None:
            end_ind = self._layer_index(end)
            outputs = set(self.bottom_names[end] + diffs)
        else:
            end_ind = 0
            outputs = set(self.inputs + diffs)
        self._fill(kwargs, self.outputs, "diff", "Top diff")
        self._backward(start_ind, end_ind)
        return {name: self.blobs[name].diff for name in outputs}

    def _batch(self, blobs: dict[str, np.ndarray]):
        """pycaffe's ``Net._batch``: the arrays in dicts of one batch each, the last one padded
        with zeros."""
        for chunk, _ in self._batches(blobs):
            yield chunk

    def _batches(self, arrays: dict[str, np.ndarray]):
        """(one batch of each array, the last padded with zeros; how many items are real)."""
        names = list(arrays)
        if not names:
            return
        batch = self.blobs[names[0]].shape[0]
        total = len(arrays[names[0]])
        for i in range(0, total, batch):
            chunk = {}
            for n in names:
                part = np.asarray(arrays[n][i:i + batch])
                if len(part) < batch:
                    pad = np.zeros((batch - len(part),) + part.shape[1:], dtype=part.dtype)
                    part = np.concatenate([part, pad])
                chunk[n] = part
            yield chunk, min(batch, total - i)

    def forward_all(self, blobs: Sequence[str] | None = None, **kwargs) -> dict[str, np.ndarray]:
        """Forward the whole input arrays in batches; returns outputs stacked over all items."""
        out: dict[str, list[np.ndarray]] = {}
        total = len(next(iter(kwargs.values()))) if kwargs else 0
        for chunk, n in self._batches(kwargs):
            for k, v in self.forward(blobs=blobs, **chunk).items():
                out.setdefault(k, []).append(v[:n].copy())
        if not kwargs:
            return {k: v.copy() for k, v in self.forward(blobs=blobs).items()}
        return {k: np.concatenate(v)[:total] for k, v in out.items()}

    def forward_backward_all(self, blobs: Sequence[str] | None = None,
                             diffs: Sequence[str] | None = None, **kwargs):
        """Forward and backward over all input (and output-diff) arrays in batches."""
        fin = {k: v for k, v in kwargs.items() if k in self.inputs}
        bin_ = {k: v for k, v in kwargs.items() if k in self.outputs}
        all_outs: dict[str, list] = {}
        all_diffs: dict[str, list] = {}
        fb = list(self._batches(fin)) or [({}, None)]
        bb = list(self._batches(bin_)) or [({}, None)] * len(fb)
        for (fc, n), (bc, _) in zip(fb, bb):
            for k, v in self.forward(blobs=blobs, **fc).items():
                all_outs.setdefault(k, []).append(v[:n].copy() if n else v.copy())
            for k, v in self.backward(diffs=diffs, **bc).items():
                all_diffs.setdefault(k, []).append(v[:n].copy() if n else v.copy())
        return ({k: np.concatenate(v) for k, v in all_outs.items()},
                {k: np.concatenate(v) for k, v in all_diffs.items()})

    def reshape(self) -> None:
        """Re-run every layer's reshape (after an input blob changed shape)."""
        for li, (layer, gate) in enumerate(zip(self._layers, self._reshape_gates)):
            gate.key = None
            try:
                gate.reshape(layer, self._bottom_vecs[li], self._top_vecs[li])
            except Exception as e:
                _raise_from(layer, "reshape", e, self._bottom_vecs[li], self._top_vecs[li])

    def clear_param_diffs(self) -> None:
        """Zero every learnable parameter's diff (one foreach kernel on a GPU, not one per
        parameter: a ResNet-50 has about 300)."""
        diffs = [p.diff_tensor for p in self._learnable_params if p.has_diff]
        if diffs:
            torch._foreach_zero_(diffs)

    def update(self) -> None:
        """``data -= diff`` for every learnable parameter (Caffe's Net::Update)."""
        for p in self._learnable_params:
            p.tensor.sub_(p.diff_tensor)

    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray, index: int = 0) -> None:
        """Hand arrays to the MemoryData layer at ``index`` (pycaffe's ``set_input_arrays``)."""
        layer = self._layers[index]
        if layer.type != "MemoryData":  # (RuntimeErrors too, as pycaffe raised here)
            raise also(NetDefinitionError(
                f"set_input_arrays needs a MemoryData layer at index {index}; layer "
                f"'{layer.name}' is {layer.type}"), RuntimeError)
        try:
            layer.reset(data, labels, len(data))
        except CaffeError as e:
            raise also(e, RuntimeError) from None

    def _set_input_arrays(self, data, labels, index: int = 0) -> None:
        self.set_input_arrays(data, labels, index)

    # callbacks (pycaffe's Net.before_forward(callable) etc.; the callable gets the layer index)
    def before_forward(self, fn: Callable[[int], None]) -> None:
        self._before_forward.append(fn)

    def after_forward(self, fn: Callable[[int], None]) -> None:
        self._after_forward.append(fn)

    def before_backward(self, fn: Callable[[int], None]) -> None:
        self._before_backward.append(fn)

    def after_backward(self, fn: Callable[[int], None]) -> None:
        """Call ``fn(i)`` after layer ``i``'s backward. While any callback is registered, a
        backward keeps every blob's diff and runs BatchNorm and Scale as two layers, so that
        ``fn`` may read any of them; a callback that reads only parameter diffs (as
        ``caffe.NCCL`` does) can say so with an attribute ``param_diffs_only = True`` and keep
        both savings (a Scale applied by its BatchNorm is then reported after the BatchNorm's
        backward, which computes the Scale's diffs too)."""
        self._after_backward.append(fn)

    # ------------------------------------------------------------------ weights
    def copy_from(self, path: str) -> None:
        """Load weights by layer name from a binary caffemodel or an HDF5 file."""
        model_io.copy_trained_layers(self, str(path))

    def copy_trained_layers_from(self, path: str) -> None:
        self.copy_from(path)

    def _clone(self) -> Net:
        """A net of this one's definition (already filtered, its splits in place) that shares
        this one's parameter memory: for work that must leave this net's blobs alone, such as
        tracing it for export."""
        clone = Net.__new__(Net)
        clone._source, clone._extra_params = self._source, self._extra_params
        clone._init(self._param, self.phase, allow_python_layers=True)
        clone.share_with(self)
        return clone

    def _first_layers_by_name(self) -> dict[str, Layer]:
        """Each layer name's first layer (Caffe's search by name when it copies or shares
        weights)."""
        first: dict[str, Layer] = {}
        for name, layer in zip(self._layer_names, self._layers):
            first.setdefault(name, layer)
        return first

    def share_with(self, other: Net) -> None:
        """Share parameter memory with ``other`` for layers of the same name (as Caffe's
        ShareTrainedLayersWith: each of ``other``'s layers in order, into this net's first
        layer of that name; data only, the diffs stay apart)."""
        targets = self._first_layers_by_name()
        for name, src in zip(other._layer_names, other._layers):
            layer = targets.get(name)
            if layer is None:
                LOG.info("Ignoring source layer %s", name)
                continue
            if len(src.blobs) != len(layer.blobs):
                raise ShapeMismatchError(
                    f"share_with: layer '{name}' has {len(layer.blobs)} param blobs here and "
                    f"{len(src.blobs)} in the source net")
            for j, (mine, their) in enumerate(zip(layer.blobs, src.blobs)):
                if mine.shape != their.shape:
                    raise ShapeMismatchError(
                        f"share_with: layer '{name}' param {j} has shape {mine.shape} here and "
                        f"{their.shape} in the source net")
                mine.share_data(their)

    def to_proto(self, write_diff: bool = False) -> caffe_pb2.NetParameter:
        """The net (every layer, split layers included) with its parameter blobs."""
        return model_io.net_to_proto(self, write_diff)

    def save(self, path: str, write_diff: bool = False) -> None:
        """Write a binary caffemodel that BVLC Caffe can load."""
        files.write_binary(str(path), self.to_proto(write_diff))

    def save_hdf5(self, path: str, write_diff: bool = False) -> None:
        model_io.save_hdf5(self, str(path), write_diff)

    def load_hdf5(self, path: str) -> None:
        model_io.copy_trained_layers(self, str(path))

    def __repr__(self) -> str:
        return f"<caffe.Net '{self.name}' {self.phase} {len(self._layers)} layers>"
