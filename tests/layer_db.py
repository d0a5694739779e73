"""The layer table: one or more rows per registered layer type, swept by tests/test_layers.py.

Each family keeps its rows in ``tests/layer_rows/<family>.py`` as ``ROWS = [LayerCase(...)]``.
A row gives the layer's parameters (prototxt text), how to make its bottoms, an independent
NumPy reference for its forward, and how to check its gradient.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from google.protobuf import text_format

import caffe
from caffe.layer import Layer, Phase
from caffe.net import create_layer
from caffe.proto import caffe_pb2

Arrays = list[np.ndarray]


@dataclass
class LayerCase:
    """One configuration of one layer type.

    type: the Caffe type name. id: a short unique name for test ids.
    param: LayerParameter text besides name/type/bottom/top, e.g. ``"relu_param { negative_slope:
    0.1 }"``.
    bottoms: ``rng -> list of arrays`` (float64; converted to float32 for the forward check).
    reference: ``(bottom arrays, layer) -> list of top arrays``, an independent NumPy forward
    (may read ``layer.blobs`` for learned parameters); None when ``check`` covers the forward.
    num_tops: how many tops to build.
    grad: "full" (check_gradient), "eltwise", "exhaustive", or "none" (no backward in Caffe).
    check_bottoms: bottoms to check (-1 = all), e.g. [0] when bottom 1 is a label.
    stepsize / threshold / kink / kink_range: GradientChecker settings (Caffe's test values).
    bad_bottom_counts / bad_top_counts: counts that must raise BlobCountError.
    check: optional extra assertions ``(layer, bottom blobs, top blobs) -> None`` after forward.
    phase: "TRAIN" or "TEST". rtol / atol: forward comparison tolerances.
    """

    type: str
    id: str
    bottoms: Callable[[np.random.Generator], Arrays]
    reference: Callable[[Arrays, Layer], Arrays] | None
    param: str = ""
    num_tops: int = 1
    grad: str = "full"
    check_bottoms: int | list[int] = -1
    stepsize: float = 1e-2
    threshold: float = 1e-3
    kink: float = 0.0
    kink_range: float = -1.0
    bad_bottom_counts: list[int] = field(default_factory=list)
    bad_top_counts: list[int] = field(default_factory=list)
    check: Callable[[Layer, list, list], None] | None = None
    phase: str = "TRAIN"
    rtol: float = 1e-4
    atol: float = 1e-5

    def layer_param(self, n_bottom: int, n_top: int) -> caffe_pb2.LayerParameter:
        lp = caffe_pb2.LayerParameter(name=self.id, type=self.type)
        text_format.Merge(self.param, lp)
        lp.bottom.extend(f"b{i}" for i in range(n_bottom))
        lp.top.extend(f"t{i}" for i in range(n_top))
        return lp

    def make_layer(self, n_bottom: int, n_top: int | None = None) -> Layer:
        n_top = self.num_tops if n_top is None else n_top
        phase = Phase.TRAIN if self.phase == "TRAIN" else Phase.TEST
        lp = self.layer_param(n_bottom, n_top)
        lp.phase = phase
        return create_layer(lp, phase)


def all_rows() -> list[LayerCase]:
    """Every row of every family module in tests/layer_rows."""
    import layer_rows

    rows: list[LayerCase] = []
    for info in pkgutil.iter_modules(layer_rows.__path__):
        module = importlib.import_module(f"layer_rows.{info.name}")
        rows.extend(module.ROWS)
    return rows


def registered_types() -> list[str]:
    """Every built-in type (Python layers, whose class the net names, have their own tests)."""
    return [t for t in caffe.layer_type_list() if t != "Python"]
