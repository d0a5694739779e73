"""Smoke test of the benchmark suite's machinery on LeNet at a tiny batch: the neocaffe/twin
agreement check (and that it catches a difference), the memory counter, the caffe-time log
parser, and the JSON/Markdown results. No timing is asserted."""

import json

import pytest
import torch

from benchmarks import __main__ as cli
from benchmarks import checks, memory, suite


@pytest.mark.parametrize("mode", ["forward", "fwdbwd", "solver"])
def test_lenet_sides_agree_and_a_changed_weight_is_caught(mode):
    torch.set_num_threads(1)
    case = suite.Case("lenet", 2, mode)
    device = suite.Device("cpu")
    param, ref, inputs = suite.build_case(case, device)

    def reference():
        return suite.TwinSide(case, param, ref, inputs, device.torch, torch.float64)

    def fresh():
        return (suite.CaffeSide(case, param, ref, inputs),
                suite.TwinSide(case, param, ref, inputs, device.torch))

    check = suite.compare(case, *fresh(), device.torch, reference)
    assert check["ok"] and check["max_rel_err"] <= suite.TOLERANCE, check
    cside, tside = fresh()
    with torch.no_grad():
        tside.model.weights["ip1_0"].mul_(1.01)
    check = suite.compare(case, cside, tside, device.torch, reference)
    assert not check["ok"] and check["max_rel_err"] > suite.TOLERANCE, check
    if mode != "forward":  # the float64 referee blames the twin, not neocaffe
        f64 = check["float64"]
        assert f64["twin_max_rel_err"] > 10 * f64["neocaffe_max_rel_err"]


def test_live_bytes_counts_and_frees():
    with memory.LiveBytes() as live:
        a = torch.zeros(1000)
        b = a + 1
        del b
        c = torch.zeros(2000)
    assert live.peak == 3000 * 4  # a and c; b (4000 bytes) was freed before c
    assert live.current == 3000 * 4
    del a, c


def test_caffe_time_log_parser():
    log = ("I1126 time.py]      conv1\tforward: 2 ms.\n"
           "I1126 time.py]      conv1\tbackward: 3 ms.\n"
           "I1126 time.py] a/b c\tforward: 1.5 ms.\n"
           "I1126 time.py] Average Forward pass: 4 ms.\n"
           "I1126 time.py] Average Backward pass: 3 ms.\n")
    r = checks.parse_caffe_time(log)
    assert r["layer_forward_ms"] == 3.5 and r["layer_backward_ms"] == 3.0
    assert r["unaccounted"] == pytest.approx(0.5 / 7)


def test_run_writes_json_and_markdown(tmp_path, capsys):
    rc = cli.main(["run", "--only", "lenet", "--batch", "2", "--threads", "1", "--repeats", "1",
                   "--sample-s", "0", "--no-opencv", "--no-caffe-time", "--no-executor",
                   "--out", str(tmp_path), "--tag", "smoke"])
    assert rc == 0
    with open(tmp_path / "smoke.json") as f:
        results = json.load(f)
    modes = {r["mode"]: r for r in results["cases"]}
    assert set(modes) == {"forward", "fwdbwd", "solver"}
    for r in modes.values():
        assert r["check"]["ok"] and r["batch"] == 2
        assert r["timings"][0]["threads"] == 1 and r["timings"][0]["ms"]["twin"] > 0
    held = modes["solver"]["memory"]["neocaffe_held_by_class"]
    assert held["param diff"]["bytes"] > 0 and held["solver history"]["bytes"] > 0
    assert modes["solver"]["memory"]["twin_bytes"] > 0
    text = (tmp_path / "smoke.md").read_text()
    assert "| lenet | 2 | solver | 1 |" in text and "## Peak memory" in text
