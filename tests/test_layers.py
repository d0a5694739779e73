"""Table-driven layer tests: every registered type has rows in tests/layer_rows; each row is
checked against its NumPy reference, by the gradient checker (float64, Caffe's kink rules), and
for wrong blob counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caffe.blob import Blob
from caffe.errors import BlobCountError, CaffeError
from caffe.testing import GradientChecker, make_blobs

from layer_db import all_rows, registered_types

ROWS = all_rows()
IDS = [f"{r.type}-{r.id}" for r in ROWS]


def test_every_registered_type_has_a_row():
    covered = {r.type for r in ROWS}
    missing = sorted(set(registered_types()) - covered)
    assert not missing, f"registered layer types without a row in tests/layer_rows: {missing}"


def test_row_ids_are_unique():
    assert len(set(IDS)) == len(IDS)


def _inputs(row):
    return [np.asarray(a, dtype=np.float64) for a in row.bottoms(np.random.default_rng(1234))]


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_forward_matches_reference(row):
    arrays = _inputs(row)
    layer = row.make_layer(len(arrays))
    bottom = make_blobs(*arrays, dtype=torch.float32)
    top = [Blob() for _ in range(row.num_tops)]
    layer.SetUp(bottom, top)
    layer.Forward(bottom, top)
    if row.reference is not None:
        expected = row.reference([a.astype(np.float32) for a in arrays], layer)
        assert len(expected) <= len(top)
        for i, (t, e) in enumerate(zip(top, expected)):
            e = np.asarray(e, dtype=np.float64)
            assert t.data.shape == e.shape, f"top {i}: shape {t.data.shape}, expected {e.shape}"
            np.testing.assert_allclose(t.data, e, rtol=row.rtol, atol=row.atol,
                                       err_msg=f"top {i}")
    if row.check is not None:
        row.check(layer, bottom, top)


@pytest.mark.parametrize("row", [r for r in ROWS if r.grad != "none"],
                         ids=[i for r, i in zip(ROWS, IDS) if r.grad != "none"])
def test_gradient(row):
    arrays = _inputs(row)
    layer = row.make_layer(len(arrays))
    bottom = make_blobs(*arrays)
    top = [Blob(dtype=torch.float64) for _ in range(row.num_tops)]
    checker = GradientChecker(row.stepsize, row.threshold, 1701, row.kink, row.kink_range)
    if row.grad == "eltwise":
        checker.check_gradient_eltwise(layer, bottom, top)
    elif row.grad == "exhaustive":
        checker.check_gradient_exhaustive(layer, bottom, top, row.check_bottoms)
    else:
        checker.check_gradient(layer, bottom, top, row.check_bottoms)


@pytest.mark.parametrize("row", [r for r in ROWS if r.bad_bottom_counts or r.bad_top_counts],
                         ids=[i for r, i in zip(ROWS, IDS)
                              if r.bad_bottom_counts or r.bad_top_counts])
def test_wrong_blob_counts_are_rejected(row):
    arrays = _inputs(row)
    for nb in row.bad_bottom_counts:
        layer = row.make_layer(nb)
        pool = arrays or [np.zeros((2, 3))]
        bottom = make_blobs(*[pool[i % len(pool)] for i in range(nb)])
        with pytest.raises(BlobCountError, match=f"'{row.id}' \\({row.type}\\) takes"):
            layer.SetUp(bottom, [Blob() for _ in range(row.num_tops)])
    for nt in row.bad_top_counts:
        layer = row.make_layer(len(arrays), nt)
        with pytest.raises(BlobCountError, match=f"'{row.id}' \\({row.type}\\) takes"):
            layer.SetUp(make_blobs(*arrays), [Blob() for _ in range(nt)])


def test_bad_counts_error_is_a_caffe_error():
    assert issubclass(BlobCountError, CaffeError) and issubclass(BlobCountError, ValueError)
