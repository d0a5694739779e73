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
