"""``check_layer``: run a layer through the checks a layer author needs, and report.

1. setup + forward on the given bottom shapes; 2. forward/backward consistency (the gradient
checker, float64), after checking that two forwards of the same bottoms give the same tops
(finite differences need it); 3. reshape: a bigger batch (along ``layer.batch_axis_of(i)``) must
reshape the tops and still pass; 4. ``propagate_down``: with it False, backward must leave that
bottom's diff untouched (a note, not a failure, for the types whose Caffe backward writes it:
``Layer.writes_unrequested_diffs``).
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from caffe.blob import Blob
from caffe.errors import (
    GradientCheckError,
    LayerSetupError,
    ProtoError,
    UnknownLayerTypeError,
)
from caffe.layer import Layer, Phase
from caffe.proto import caffe_pb2, files
from caffe.registry import layer_class
from caffe.testing.gradient_check import GradientChecker, make_blobs


@dataclass
class BottomSpec:
    """A bottom's shape and how to fill it: gaussian, uniform, positive, or int:N (labels in
    [0, N), not gradient-checked)."""

    shape: tuple[int, ...]
    kind: str = "gaussian"

    @classmethod
    def parse(cls, text: str) -> BottomSpec:
        shape_text, _, kind = text.partition(":")
        dims = [d.strip() for d in shape_text.split(",") if d.strip()]
        if not all(d.isdigit() for d in dims):
            raise LayerSetupError(f"bottom spec '{text}': the shape must be comma-separated "
                                  "non-negative integers, e.g. 4,3 or 4,1:int:10")
        kind = kind or "gaussian"
        if kind.startswith("int:"):
            n = kind[4:]
            if not (n.isdigit() and int(n) > 0):
                raise LayerSetupError(f"bottom spec '{text}': int:N needs a positive integer N "
                                      f"(labels 0 to N-1), got '{n}'")
        elif kind not in ("gaussian", "uniform", "positive"):
            raise LayerSetupError(f"bottom spec '{text}': unknown fill '{kind}'; use gaussian, "
                                  "uniform, positive or int:N")
        return cls(tuple(int(d) for d in dims), kind)

    def make(self, rng: np.random.Generator, batch_scale: int = 1,
             batch_axis: int | None = 0) -> np.ndarray:
        shape = list(self.shape)
        if batch_axis is not None and batch_axis < len(shape):
            shape[batch_axis] *= batch_scale
        if self.kind.startswith("int:"):
            return rng.integers(0, int(self.kind[4:]), size=shape).astype(np.float64)
        if self.kind == "uniform":
            return rng.uniform(-1, 1, size=shape)
        if self.kind == "positive":
            return rng.uniform(0.1, 1, size=shape)
        return rng.standard_normal(shape)

    @property
    def differentiable(self) -> bool:
        return not self.kind.startswith("int:")


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: int = 0

    def ok(self, what: str) -> None:
        self.lines.append(f"PASS  {what}")

    def note(self, what: str) -> None:
        self.lines.append(f"NOTE  {what}")

    def fail(self, what: str) -> None:
        self.failures += 1
        self.lines.append(f"FAIL  {what}")

    def __str__(self) -> str:
        passed = sum(line.startswith("PASS") for line in self.lines)
        return "\n".join(self.lines + [f"{passed} passed, {self.failures} failed"])


def layer_param_from_text(text: str, num_bottom: int,
                          num_top: int | None = None) -> caffe_pb2.LayerParameter:
    """The LayerParameter of ``text``, with a name and bottom/top names added where it gives
    none: ``num_top`` tops, by default as many as the type declares (exact, else minimum,
    else 1)."""
    lp = caffe_pb2.LayerParameter()
    try:
        files.parse_text(text, lp, "the layer text")
    except ProtoError as e:
        raise ProtoError(f"{e} (not LayerParameter prototxt: write it as in a prototxt's "
                         "layer { ... }, e.g. 'type: \"ReLU\"')") from None
    if not lp.name:
        lp.name = "checked"
    if not lp.bottom:
        lp.bottom.extend(f"bottom{i}" for i in range(num_bottom))
    if not lp.top:
        if num_top is None:
            try:
                cls = layer_class(lp.type, lp.name)
            except UnknownLayerTypeError:
                cls = Layer  # create_layer reports the unknown type
            num_top = cls.exact_num_top_blobs or cls.min_top_blobs or 1
        lp.top.extend(f"top{i}" for i in range(num_top))
    return lp


def _explain(e: BaseException, stage: str, lp: caffe_pb2.LayerParameter,
             blobs: dict[str, list]) -> str:
    """``e`` as the net would report it (with the hint at the usual Python-layer mistakes),
    plus the place in the layer's code that raised it."""
    from caffe.net import python_layer_hint

    hint = (python_layer_hint(stage, e, blobs.get("bottom", []), blobs.get("top", []), lp)
            if lp.type == "Python" else "")
    frames = traceback.extract_tb(e.__traceback__)
    where = f" [at {frames[-1].filename}:{frames[-1].lineno}, in {frames[-1].name}]" if frames \
        else ""
    return f"{type(e).__name__}: {e}{hint}{where}"


def check_layer(layer_text: str, bottoms: Sequence[BottomSpec], num_top: int | None = None,
                phase: Phase = Phase.TRAIN, checker: GradientChecker | None = None,
                exhaustive: bool = False, seed: int = 1701,
                no_gradient: Sequence[int] = ()) -> Report:
    """Run every check on the layer described by ``layer_text`` (LayerParameter prototxt).
    ``no_gradient``: indices of bottoms that take no gradient although not filled with int:N
    (a fixed matrix, targets)."""
    from caffe.net import create_layer

    outside = [i for i in no_gradient if not 0 <= i < len(bottoms)]
    if outside:
        raise LayerSetupError(f"no_gradient {outside}: the bottoms are numbered 0 to "
                              f"{len(bottoms) - 1}")
    checker = checker or GradientChecker()
    report = Report()
    lp = layer_param_from_text(layer_text, len(bottoms), num_top)
    num_top = len(lp.top)
    rng = np.random.default_rng(seed)

    def build():
        return create_layer(lp, phase)

    made: dict[str, list] = {}  # the blobs of the latest setup, for error hints

    def setup(layer, scale=1):
        bottom = make_blobs(*(b.make(np.random.default_rng(seed), scale) for b in bottoms))
        top = [Blob(dtype=torch.float64) for _ in range(num_top)]
        made.update(bottom=bottom, top=top)
        checker._setup(layer, bottom, top)
        return bottom, top

    # 1. setup and forward
    try:
        layer = build()
        bottom, top = setup(layer)
        checker._forward(layer, bottom, top)
        report.ok(f"setup and forward: bottoms {[b.shape for b in bottom]} -> tops "
                  f"{[t.shape for t in top]}")
    except Exception as e:  # report anything user code raises
        stage = "forward" if made else "setup"
        report.fail(f"setup/forward raised {_explain(e, stage, lp, made)}")
        return report
    # what takes a gradient: not int:N fills, nor the bottoms the type refuses (labels...)
    refused = type(layer).refuses_force_backward(len(bottoms)) | set(no_gradient)
    grad = [b.differentiable and i not in refused for i, b in enumerate(bottoms)]
    checked = [i for i, g in enumerate(grad) if g]

    # 2. gradient
    if not layer.has_backward:
        report.ok("no backward (the layer declares has_backward = False)")
    elif not checked and not layer.blobs:
        report.ok("backward: nothing to check (no bottom takes a gradient, no parameter blobs)")
    else:
        try:
            _require_repeatable(checker, layer, bottom, top)
            fresh = build()
            b2, t2 = setup(fresh)
            if exhaustive:
                for i, t in enumerate(t2):
                    for j in range(t.count):
                        checker.check_gradient_single(fresh, b2, t2, checked, i, j)
            else:
                checker.check_gradient_single(fresh, b2, t2, checked, -1, -1)
            report.ok(f"backward matches finite differences (bottoms {checked}, "
                      f"{len(fresh.blobs)} param blobs)")
        except GradientCheckError as e:
            report.fail(f"gradient: {e}")
        except Exception as e:  # report anything user code raises
            report.fail(f"gradient check raised {_explain(e, 'backward', lp, made)}")

    # 3. reshape with a bigger batch
    if bottoms and bottoms[0].shape:
        try:
            big = [b.make(rng, 2, layer.batch_axis_of(i)) for i, b in enumerate(bottoms)]
            for blob, arr in zip(bottom, big):
                blob.reshape(arr.shape)
                blob.tensor.copy_(torch.from_numpy(arr))
            before = [t.shape for t in top]
            checker._forward(layer, bottom, top)
            after = [t.shape for t in top]
            report.ok(f"reshape: doubling the batch gives tops {after} (were {before})")
            a = layer.batch_axis_of(0)
            if (a is not None and before == after and before
                    and before[0][a:a + 1] == bottoms[0].shape[a:a + 1]):
                report.note("the top shapes did not follow the bottom's batch size: does "
                            "reshape() recompute them from the bottoms?")
        except Exception as e:  # report anything user code raises
            report.fail(f"reshape to a bigger batch raised {_explain(e, 'forward', lp, made)} "
                        "(reshape() runs before every forward: compute the top shapes and any "
                        "buffers from the bottoms there)")

    # 4. propagate_down
    if layer.has_backward and bottom:
        try:
            fresh = build()
            b3, t3 = setup(fresh)
            checker._record(fresh, grad)  # for every pd below
            checker._forward(fresh, b3, t3)
            for t in t3:
                t.diff_tensor = torch.ones_like(t.tensor)
            sentinel = 123.25
            written = []
            for i in range(len(b3)):
                for b in b3:
                    b.diff_tensor = torch.full_like(b.tensor, sentinel)
                pd = [j == i and grad[i] for j in range(len(b3))]
                fresh.backward(t3, pd, b3)
                touched = [j for j, b in enumerate(b3)
                           if not pd[j] and not bool((b.diff_tensor == sentinel).all())]
                if touched:
                    written.append(f"with propagate_down {pd}, backward wrote the diff of "
                                   f"bottom(s) {touched}")
            if not written:
                report.ok("propagate_down: backward leaves bottoms with propagate_down False "
                          "alone")
            elif fresh.writes_unrequested_diffs:
                report.note(f"propagate_down: {'; '.join(written)}, as Caffe's {fresh.type} "
                            "does (writes_unrequested_diffs): kept for Caffe's numbers")
            else:
                report.fail(f"propagate_down: {written[0]}: skip bottoms whose propagate_down "
                            "is False")
        except Exception as e:  # report anything user code raises
            report.fail(f"propagate_down check raised {_explain(e, 'backward', lp, made)}")
    return report


def _require_repeatable(checker: GradientChecker, layer: Layer, bottom: Sequence[Blob],
                        top: Sequence[Blob]) -> None:
    """Raise GradientCheckError when a second forward of ``layer`` on the same bottoms (the
    tops hold the first one's) gives other tops: finite differences would then measure the
    change between calls, not the gradient."""
    first = [t.tensor.clone() for t in top]
    checker._forward(layer, bottom, top)
    for i, (was, t) in enumerate(zip(first, top)):
        now = t.tensor
        if was.shape != now.shape:
            changed = f"top {i}'s shape from {tuple(was.shape)} to {tuple(now.shape)}"
        else:
            same = (was == now) | (was.isnan() & now.isnan())
            if bool(same.all()):
                continue
            worst = float((was - now)[~same].abs().nan_to_num(float("inf")).max())
            changed = f"top {i} (by up to {worst:.3g})"
        raise GradientCheckError(
            f"not checked: a second forward of the same bottoms changed {changed}. Finite "
            "differences need tops that depend on the bottoms and parameters alone: does "
            "forward keep state from the previous call (an RNN/LSTM continues from its last "
            "state where cont is 1 at t = 0: give cont 0 there), or draw random numbers other "
            "than from caffe's seeded generator?")
