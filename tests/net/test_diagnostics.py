"""debug_info log lines and the opt-in NaN/Inf check."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import caffe
from caffe.errors import NumericalError

from nets import LINREG, make_net

LOG_NET = """
force_backward: true
layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 3 } } }
layer { name: "log" type: "Log" bottom: "x" top: "y" }
layer { name: "relu" type: "ReLU" bottom: "y" top: "z" }
"""


def test_nan_check_names_the_first_layer_and_blob():
    net = make_net(LOG_NET)
    net.check_nan = True
    net.blobs["x"].data[...] = [1.0, -1.0, 2.0]
    with pytest.raises(NumericalError, match=r"Layer 'log' \(Log\) produced nan in top blob 'y' "
                                             r"data during forward.*1 of 3.*index \(1,\)"):
        net.forward()


def test_nan_check_in_backward():
    net = make_net(LOG_NET)
    net.check_nan = True
    net.blobs["x"].data[...] = [1.0, 0.5, 2.0]
    net.forward()
    net.blobs["z"].diff[...] = [1.0, np.inf, 1.0]
    with pytest.raises(NumericalError, match="Layer 'relu'.*bottom blob 'y' diff during backward"):
        net.backward()


def test_without_the_check_nan_passes_silently():
    net = make_net(LOG_NET)
    net.blobs["x"].data[...] = [1.0, -1.0, 2.0]
    net.forward()
    assert np.isnan(net.blobs["y"].data[1])


def _logged(caplog, run) -> str:
    """What Caffe's log says at INFO while ``run()`` runs."""
    logger = logging.getLogger("caffe")
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(caplog.handler)
    try:
        run()
    finally:
        logger.setLevel(old)
        logger.removeHandler(caplog.handler)
    return caplog.text


def test_debug_info_prints_caffe_lines(caplog):
    net = make_net(LINREG.replace('name: "linreg"', 'name: "linreg" debug_info: true'))
    text = _logged(caplog, lambda: (net.forward(), net.backward()))
    assert "[Forward] Layer fc, top blob fc data:" in text
    assert "[Forward] Layer fc, param blob 0 data:" in text
    assert "[Backward] Layer fc, param blob 1 diff:" in text
    assert "[Backward] Layer loss, bottom blob fc diff:" in text
    assert caffe.TRAIN == net.phase


def test_debug_info_names_params_and_skips_frozen_ones(caplog):
    # as Caffe: forward shows a named param by its name; backward leaves out a param with
    # lr_mult 0, whose diff is not computed; a solver step ends with the norms of all params
    text = LINREG.replace('name: "linreg"', 'name: "linreg" debug_info: true').replace(
        'top: "fc"', 'top: "fc" param { name: "w" } param { lr_mult: 0 }')
    net = make_net(text)
    text = _logged(caplog, net.forward_backward)
    assert "[Forward] Layer fc, param blob w data:" in text
    assert "[Forward] Layer fc, param blob 1 data:" in text
    assert "[Backward] Layer fc, param blob 0 diff:" in text
    assert "[Backward] Layer fc, param blob 1 diff:" not in text
    w = net.params["fc"][0]
    l1 = np.abs(w.data).sum() + np.abs(net.params["fc"][1].data).sum()
    assert f"All net params (data, diff): L1 norm = ({l1:g}, {np.abs(w.diff).sum():g})" in text


def test_a_device_side_assert_comes_with_the_label_check_hint(monkeypatch):
    """The GPU reports an out-of-range label later, from another layer: the error says so."""
    net = make_net(LINREG)
    layer = net.layer_dict["fc"]

    def fails(bottom, top):
        raise RuntimeError("CUDA error: device-side assert triggered")
    monkeypatch.setattr(layer, "forward", fails)
    with pytest.raises(caffe.errors.LayerSetupError) as info:
        net.forward()
    message = str(info.value)
    assert "'fc'" in message and "CAFFE_CHECK_LABELS=1" in message
    assert "may not be the one at fault" in message


CONSTRUCTION = """
name: "tiny"
layer { name: "in" type: "Input" top: "x" top: "t"
  input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a"
  param { name: "w" } inner_product_param { num_output: 4 bias_term: false } }
layer { name: "b" type: "InnerProduct" bottom: "x" top: "b"
  param { name: "w" } inner_product_param { num_output: 4 bias_term: false } }
layer { name: "relu" type: "ReLU" bottom: "a" top: "a" }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "y" }
layer { name: "fc" type: "InnerProduct" bottom: "y" top: "z" inner_product_param {
  num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "t" loss_weight: 0.5 }
layer { name: "copy" type: "Power" bottom: "y" top: "out" }
"""


def test_construction_log_is_caffes(caplog):
    _logged(caplog, lambda: make_net(CONSTRUCTION))
    lines = [r.getMessage() for r in caplog.records]
    first = lines.index("Creating Layer in")
    assert lines[0].startswith('Initializing net from parameters: \nname: "tiny"')
    assert "\n    num_output: 4\n" in lines[0] and "loss_weight: 0.5\n" in lines[0]
    assert lines[first:] == [
        "Creating Layer in", "in -> x", "in -> t", "Setting up in", "Top shape: 2 3 (6)",
        "Top shape: 2 (2)", "Memory required for data: 32",
        "Creating Layer x_in_0_split", "x_in_0_split <- x", "x_in_0_split -> x_in_0_split_0",
        "x_in_0_split -> x_in_0_split_1", "Setting up x_in_0_split", "Top shape: 2 3 (6)",
        "Top shape: 2 3 (6)", "Memory required for data: 80",
        "Creating Layer a", "a <- x_in_0_split_0", "a -> a", "Setting up a",
        "Top shape: 2 4 (8)", "Memory required for data: 112",
        "Creating Layer b", "b <- x_in_0_split_1", "b -> b", "Setting up b",
        "Top shape: 2 4 (8)", "Memory required for data: 144",
        "Sharing parameters 'w' owned by layer 'a', param index 0",
        "Creating Layer relu", "relu <- a", "relu -> a (in-place)", "Setting up relu",
        "Top shape: 2 4 (8)", "Memory required for data: 176",
        "Creating Layer sum", "sum <- a", "sum <- b", "sum -> y", "Setting up sum",
        "Top shape: 2 4 (8)", "Memory required for data: 208",
        "Creating Layer y_sum_0_split", "y_sum_0_split <- y", "y_sum_0_split -> y_sum_0_split_0",
        "y_sum_0_split -> y_sum_0_split_1", "Setting up y_sum_0_split", "Top shape: 2 4 (8)",
        "Top shape: 2 4 (8)", "Memory required for data: 272",
        "Creating Layer fc", "fc <- y_sum_0_split_0", "fc -> z", "Setting up fc",
        "Top shape: 2 3 (6)", "Memory required for data: 296",
        "Creating Layer loss", "loss <- z", "loss <- t", "loss -> (automatic)",
        "Setting up loss", "Top shape: (1)", "    with loss weight 0.5",
        "Memory required for data: 300",
        "Creating Layer copy", "copy <- y_sum_0_split_1", "copy -> out", "Setting up copy",
        "Top shape: 2 4 (8)", "Memory required for data: 332",
        "copy does not need backward computation.",
        "loss needs backward computation.", "fc needs backward computation.",
        "y_sum_0_split needs backward computation.",
        "sum needs backward computation.", "relu needs backward computation.",
        "b needs backward computation.", "a needs backward computation.",
        "x_in_0_split does not need backward computation.",
        "in does not need backward computation.",
        "This network produces output out",
        "Network initialization done."]  # an automatic top is no output (Caffe's rule)


RULES = """
name: "rules"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }
layer { name: "test_only" type: "Power" bottom: "x" top: "p1" include { phase: TEST } }
layer { name: "low" type: "Power" bottom: "x" top: "p2" include { min_level: 3 } }
layer { name: "high" type: "Power" bottom: "x" top: "p3" include { max_level: 1 } }
layer { name: "staged" type: "Power" bottom: "x" top: "p4" include { stage: "a" stage: "c" } }
layer { name: "unstaged" type: "Power" bottom: "x" top: "p5" include { not_stage: "b" } }
layer { name: "second" type: "Power" bottom: "x" top: "p6"
  include { phase: TEST } include { stage: "b" } include { phase: TEST } }
layer { name: "kept" type: "Power" bottom: "x" top: "p7"
  exclude { phase: TEST } exclude { stage: "z" } }
layer { name: "dropped" type: "Power" bottom: "x" top: "p8"
  exclude { stage: "z" } exclude { stage: "a" } exclude { phase: TEST } }
"""


def test_rules_a_layer_fails_are_logged_as_caffe_logs_them(caplog):
    """Caffe's FilterNet logs every rule it tries that the state does not meet, in order:
    include rules until one is met, exclude rules until one is met (phases as numbers)."""
    nets = []
    _logged(caplog, lambda: nets.append(make_net(RULES, level=2, stages=["a", "b"])))
    assert [n for n in nets[0].layer_dict if not n.endswith("split")] == [
        "in", "second", "kept"]
    lines = [r.getMessage() for r in caplog.records]
    end = "specified by a rule in layer"
    assert lines[:lines.index(next(m for m in lines if m.startswith("Initializing")))] == [
        f"The NetState phase (0) differed from the phase (1) {end} test_only",
        f"The NetState level (2) is above the min_level (3) {end} low",
        f"The NetState level (2) is above the max_level (1) {end} high",
        f"The NetState did not contain stage 'c' {end} staged",
        f"The NetState contained a not_stage 'b' {end} unstaged",
        f"The NetState phase (0) differed from the phase (1) {end} second",
        f"The NetState phase (0) differed from the phase (1) {end} kept",
        f"The NetState did not contain stage 'z' {end} kept",
        f"The NetState did not contain stage 'z' {end} dropped"]
