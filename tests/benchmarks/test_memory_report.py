"""The memory part of the benchmark suite: ``run --memory-only`` (no timing), bytes held per
blob class when built and after a solver step (intermediate diffs released), and the in-place
report (in-place BatchNorm with global statistics stays in place). No numbers are asserted
beyond what the engine guarantees."""

import json

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from benchmarks import __main__ as cli
from benchmarks import memory
from caffe.proto import caffe_pb2


def test_memory_only_run_reports_classes_before_and_after_a_step(tmp_path):
    rc = cli.main(["run", "--memory-only", "--only", "lenet", "--batch", "2", "--threads", "1",
                   "--out", str(tmp_path)])
    assert rc == 0
    with open(tmp_path / "cpu-memory.json") as f:
        results = json.load(f)
    modes = {r["mode"]: r for r in results["cases"]}
    assert set(modes) == {"forward", "solver"}
    assert all(r["timings"] == [] and r["check"]["ok"] for r in modes.values())
    mem = modes["solver"]["memory"]
    before, after = mem["neocaffe_held_before_by_class"], mem["neocaffe_held_by_class"]
    assert before["param diff"]["bytes"] == 0 and after["param diff"]["bytes"] > 0
    assert after["blob diff"]["bytes"] <= 4  # only the loss weight stays
    assert after["blob data"]["bytes"] > 0 and mem["in_place_moved"] == []
    text = (tmp_path / "cpu-memory.md").read_text()
    assert "built / after the measured call" in text and "| lenet | 2 | solver |" in text


BN_NET = """
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 } } }
layer { name: "conv" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "r" type: "Reshape" bottom: "y" top: "z"
        reshape_param { shape { dim: 2 dim: 3 dim: 2 } } }
layer { name: "bn" type: "BatchNorm" bottom: "z" top: "{bn}"
        batch_norm_param { use_global_stats: {stats} } }
layer { name: "sc" type: "Scale" bottom: "{bn}" top: "{sc}" scale_param { bias_term: true } }
"""


def _net(stats: str, bn: str, sc: str) -> caffe.Net:
    text = BN_NET.replace("{stats}", stats).replace("{bn}", bn).replace("{sc}", sc)
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TRAIN)


@pytest.mark.parametrize("global_stats", ["true", "false"])
def test_in_place_batchnorm_and_scale_hold_no_extra_output(global_stats):
    """Global statistics: BatchNorm writes into the blob; batch statistics: it hands the blob
    a new tensor and keeps the old one (its input) for backward, one buffer as Caffe's x_norm.
    Scale in place keeps one reused copy. Out-of-place and in-place results agree to float32
    rounding (in place multiplies then adds; out of place fuses)."""
    in_place, out = _net(global_stats, "z", "z"), _net(global_stats, "n", "s")
    for net in (in_place, out):
        net.params["conv"][0].data[...] = in_place.params["conv"][0].data
        net.params["bn"][0].data[...] = [0.5, -1.0, 2.0]
        net.params["bn"][1].data[...] = [1.0, 4.0, 0.25]
        net.params["bn"][2].data[...] = 2.0
        net.params["sc"][0].data[...] = [1.5, -0.5, 2.0]
        net.blobs["x"].data[...] = torch.arange(24.0).reshape(2, 3, 4).numpy() / 7 - 1
    moved = memory.in_place_report(in_place)
    if global_stats == "true":
        assert moved == []
    else:
        assert [(m["type"], m["kept_for_backward"]) for m in moved] == [("BatchNorm", True)]
    a, b = in_place.forward()["z"], out.forward()["s"]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
