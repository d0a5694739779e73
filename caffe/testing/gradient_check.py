"""GradientChecker: compare a layer's backward with central finite differences of its forward.

Same rules as Caffe's ``GradientChecker(stepsize, threshold, seed, kink, kink_range)``: the
objective is either half the sum of squares of every top (``check_gradient``) or twice one top
element (``check_gradient_exhaustive`` / ``check_gradient_eltwise``); each checked element must
satisfy ``|analytic - numeric| <= threshold * max(|analytic|, |numeric|, 1)`` unless its input
value lies within ``kink_range`` of ``kink`` (a non-differentiable point such as ReLU's 0).

Works on any layer, built-in or Python. The checker runs in float64: pass float64 bottoms
(``make_blobs``) and it converts the layer's parameter blobs after setup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from caffe._common import set_random_seed
from caffe.blob import Blob
from caffe.errors import GradientCheckError
from caffe.layer import Layer


def make_blobs(*arrays: np.ndarray, dtype: torch.dtype = torch.float64) -> list[Blob]:
    """Blobs holding copies of ``arrays`` (float64 by default, for gradient checks)."""
    blobs = []
    for a in arrays:
        a = np.asarray(a)
        b = Blob(*a.shape, dtype=dtype)
        b.tensor.copy_(torch.from_numpy(np.array(a, order="C")).to(dtype))
        blobs.append(b)
    return blobs


def _to_dtype(blob: Blob, dtype: torch.dtype) -> None:
    if blob._t.dtype != dtype:
        blob._t = blob._t.to(dtype)
        if blob._g is not None:
            blob._g = blob._g.to(dtype)


class GradientChecker:
    """``GradientChecker(stepsize=1e-2, threshold=1e-3, seed=1701, kink=0., kink_range=-1)``."""

    def __init__(self, stepsize: float = 1e-2, threshold: float = 1e-3, seed: int = 1701,
                 kink: float = 0.0, kink_range: float = -1.0) -> None:
        self.stepsize = stepsize
        self.threshold = threshold
        self.seed = seed
        self.kink = kink
        self.kink_range = kink_range

    # ------------------------------------------------------------------ public checks
    def check_gradient(self, layer: Layer, bottom: Sequence[Blob], top: Sequence[Blob],
                       check_bottom: int | Sequence[int] = -1) -> None:
        """Set the layer up, then check d(sum of top^2 / 2) w.r.t. bottoms and params."""
        self._setup(layer, bottom, top)
        self.check_gradient_single(layer, bottom, top, check_bottom, -1, -1)

    def check_gradient_exhaustive(self, layer: Layer, bottom: Sequence[Blob],
                                  top: Sequence[Blob],
                                  check_bottom: int | Sequence[int] = -1) -> None:
        """Check the gradient of every top element separately."""
        self._setup(layer, bottom, top)
        if not top:
            raise GradientCheckError("exhaustive mode needs at least one top blob")
        self._forward(layer, bottom, top)  # tops may change shape at forward (Filter)
        for i, t in enumerate(top):
            for j in range(t.count):
                self.check_gradient_single(layer, bottom, top, check_bottom, i, j)

    def check_gradient_eltwise(self, layer: Layer, bottom: Sequence[Blob],
                               top: Sequence[Blob]) -> None:
        """For elementwise layers: top element j depends only on bottom element j."""
        self._setup(layer, bottom, top)
        if not top:
            raise GradientCheckError("elementwise mode needs at least one top blob")
        self._forward(layer, bottom, top)
        for i, t in enumerate(top):
            for j in range(t.count):
                self.check_gradient_single(layer, bottom, top, -1, i, j, element_wise=True)

    # ------------------------------------------------------------------ machinery
    @staticmethod
    def _setup(layer: Layer, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        bottom, top = layer.io_blobs(bottom), layer.io_blobs(top)
        dtype = bottom[0].tensor.dtype if bottom else torch.float64
        for t in top:
            _to_dtype(t, dtype)
        layer.SetUp(bottom, top)
        for p in layer.blobs:
            _to_dtype(p, dtype)
        for t in top:
            _to_dtype(t, dtype)
        layer._param_propagate_down = [True] * len(layer.blobs)

    @staticmethod
    def _record(layer: Layer, need: Sequence[bool]) -> None:
        """Have a layer whose backward is autograd's record its forwards, for the bottoms in
        ``need`` and its parameters, as a net that will run its backward does."""
        layer._record_bottoms = list(need) if layer.uses_autograd() else None

    def _forward(self, layer: Layer, bottom, top) -> None:
        set_random_seed(self.seed)
        with torch.no_grad():
            layer.reshape(bottom, top)
            layer._forward(bottom, top)

    @staticmethod
    def _objective(top: Sequence[Blob], top_id: int, top_data_id: int) -> float:
        if top_id < 0:
            loss = 0.0
            for t in top:
                x = t.tensor
                loss += float((x.double() * x.double()).sum())
                t.diff_tensor = x.clone()
            return loss / 2.0
        for t in top:
            t.diff_tensor = torch.zeros_like(t.tensor)
        t = top[top_id]
        t.diff_tensor.view(-1)[top_data_id] = 2.0
        return float(t.tensor.reshape(-1)[top_data_id]) * 2.0

    def check_gradient_single(self, layer: Layer, bottom: Sequence[Blob], top: Sequence[Blob],
                              check_bottom: int | Sequence[int], top_id: int, top_data_id: int,
                              element_wise: bool = False) -> None:
        """One objective (all tops, or one top element); compare for every checked input."""
        bottom, top = layer.io_blobs(bottom), layer.io_blobs(top)
        if isinstance(check_bottom, int):
            checked = list(range(len(bottom))) if check_bottom == -1 else [check_bottom]
        else:
            checked = list(check_bottom)
        if any(not 0 <= i < len(bottom) for i in checked):
            raise GradientCheckError(f"check_bottom {check_bottom} is out of range for "
                                     f"{len(bottom)} bottoms")
        propagate_down = [i in checked for i in range(len(bottom))]
        targets: list[tuple[str, Blob]] = []
        for i, p in enumerate(layer.blobs):
            p.diff_tensor = torch.zeros_like(p.tensor)
            targets.append((f"param blob {i}", p))
        for i in checked:
            targets.append((f"bottom {i}", bottom[i]))
        if not targets:
            raise GradientCheckError("no blobs to check")
        self._record(layer, propagate_down)
        self._forward(layer, bottom, top)
        self._objective(top, top_id, top_data_id)
        with torch.no_grad():
            layer.backward(top, propagate_down, bottom)
        computed = [b.diff_tensor.detach().clone().reshape(-1) for _, b in targets]
        for (what, blob), grads in zip(targets, computed):
            flat = blob.tensor.view(-1)
            for k in range(blob.count):
                estimated = 0.0
                if not element_wise or k == top_data_id:
                    orig = float(flat[k])
                    flat[k] = orig + self.stepsize
                    self._forward(layer, bottom, top)
                    plus = self._objective(top, top_id, top_data_id)
                    flat[k] = orig - self.stepsize
                    self._forward(layer, bottom, top)
                    minus = self._objective(top, top_id, top_data_id)
                    flat[k] = orig
                    estimated = (plus - minus) / self.stepsize / 2.0
                analytic = float(grads[k])
                feature = float(flat[k])
                if self.kink - self.kink_range <= abs(feature) <= self.kink + self.kink_range:
                    continue
                scale = max(abs(analytic), abs(estimated), 1.0)
                if not abs(analytic - estimated) <= self.threshold * scale:
                    where = ("the sum of squares of all tops" if top_id < 0
                             else f"top {top_id} element {top_data_id}")
                    why = ("The checked tops are not all finite (NaN or inf) at these inputs: "
                           "check with inputs inside the layer's domain (e.g. positive inputs "
                           "for Log or a fractional Power)" if not math.isfinite(estimated) else
                           "If the forward has a kink (abs, max, a threshold) within the "
                           f"stepsize {self.stepsize:g} of this input, the finite difference "
                           "straddles it: try a smaller stepsize, or the kink and kink_range "
                           "arguments; else backward() is wrong here")
                    raise GradientCheckError(
                        f"Layer '{layer.name}' ({layer.type}): gradient of {where} w.r.t. "
                        f"{what} element {k} (value {feature:.6g}) is {analytic:.6g} by "
                        f"backward() but {estimated:.6g} by finite differences (tolerance "
                        f"{self.threshold * scale:.3g}). {why}")
        layer._record_bottoms = None
