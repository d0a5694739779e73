"""Smoke test of the per-layer speed benchmark (benchmarks/layer_speed.py): the machinery runs
a few types at tiny sizes with one round, the twins agree with the layers, and the reports
render. No timing assertions."""

import json

import pytest

import caffe
from benchmarks import layer_speed
from benchmarks.layer_speed_cases import CASES, SKIPPED


@pytest.fixture(scope="module")
def result():
    return layer_speed.run(["ReLU", "Convolution", "SoftmaxWithLoss"], mode="tiny",
                           repeats=1, sample_s=0.0, log=None)


def test_rows_are_complete_and_twins_agree(result):
    names = {(r["type"], r["variant"]) for r in result["rows"]}
    assert names == {("ReLU", ""), ("ReLU", "in place"), ("Convolution", "3x3"),
                     ("SoftmaxWithLoss", "")}
    for row in result["rows"]:
        assert row["check"] == "ok", row
        assert row["ours_ms"] > 0 and row["twin_ms"] > 0
        assert row["status"] in ("PASS", "MISS")
        assert row["target"] == (1.1 if row["type"] in ("ReLU", "Convolution") else 1.3)


def test_in_place_memory_is_measured(result):
    (row,) = [r for r in result["rows"] if r["in_place"]]
    mem = row["memory"]
    # ReLU in place keeps nothing between steps; its backward needs at most a new diff
    assert mem["ours_held"] == 0
    assert 0 < mem["ours_peak_extra"] <= 2
    assert mem["status"] in ("PASS", "MISS")


def test_reports_render(result, tmp_path):
    md = layer_speed.markdown(result)
    assert "| ReLU in place |" in md and "In-place layers" in md
    assert "ReLU" in layer_speed.text_table(result)
    json.dumps(result)


def test_every_registered_type_has_a_case_or_a_reason():
    covered = {c.type for c in CASES} | set(SKIPPED)
    assert set(caffe.layer_type_list()) <= covered


def test_unknown_type_is_refused():
    with pytest.raises(SystemExit, match="NoSuchLayer"):
        layer_speed.select_cases(["NoSuchLayer"])


@pytest.mark.parametrize("type_name", ["Accuracy", "ArgMax"])
def test_tie_rule_twins_are_checked_on_ties(type_name):
    """Accuracy's and ArgMax's cases have tied maxima, so the check tells Caffe's tie rules
    from a plain argmax: the case's twin passes it, a plain argmax twin does not."""
    import torch

    (case,) = layer_speed.select_cases([type_name])
    bench = layer_speed.Bench(case, "tiny", torch.device("cpu"))
    x = bench.x0[0]
    assert ((x == x.amax(1, keepdim=True)).sum(1) > 1).any()
    assert bench.verify() == ""
    if type_name == "Accuracy":
        bench.spec.twin = lambda b, p: [(b[0].argmax(1) == b[1].long()).float().mean()]
    else:
        bench.spec.twin = lambda b, p: [b[0].argmax(1).float().view(-1, 1, 1)]
    assert "top 0" in bench.verify()
