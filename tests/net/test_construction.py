"""Net construction rules: state filtering, automatic splits, in-place layers, loss weights,
backward planning (force_backward, propagate_down), parameter sharing."""

from __future__ import annotations

import numpy as np
import pytest

import caffe
from caffe.errors import LayerSetupError, NetDefinitionError, ShapeMismatchError

from nets import IP_FILLERS, LINREG, make_net, net_param

STATE_NET = """
name: "states"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "train_only" type: "ReLU" bottom: "data" top: "a" include { phase: TRAIN } }
layer { name: "test_only" type: "ReLU" bottom: "data" top: "a" include { phase: TEST } }
layer { name: "level2" type: "ReLU" bottom: "a" top: "b" include { min_level: 2 } }
layer { name: "staged" type: "ReLU" bottom: "a" top: "c" include { stage: "deploy" } }
layer { name: "not_staged" type: "ReLU" bottom: "a" top: "d" exclude { stage: "deploy" } }
"""


def test_phase_level_and_stage_rules():
    net = make_net(STATE_NET, caffe.TRAIN)
    assert net._layer_names[:2] == ["input", "train_only"]
    assert "level2" not in net._layer_names and "staged" not in net._layer_names
    assert "not_staged" in net._layer_names
    net = make_net(STATE_NET, caffe.TEST, level=2, stages=["deploy"])
    names = net._layer_names
    assert "test_only" in names and "level2" in names and "staged" in names
    assert "not_staged" not in names and "train_only" not in names


def test_stages_add_to_the_files_state_and_level_replaces_it():
    """Caffe's Net(file, phase, level, stages) appends the stages to the file's state and
    sets its level."""
    text = STATE_NET.replace('name: "states"', 'name: "states" state { stage: "x" level: 5 }')
    text += 'layer { name: "x_only" type: "ReLU" bottom: "a" top: "e" include { stage: "x" } }\n'
    names = make_net(text, caffe.TEST, stages=["deploy"])._layer_names
    assert "x_only" in names and "staged" in names and "level2" not in names


def test_include_and_exclude_together_is_an_error():
    text = STATE_NET.replace('include { phase: TRAIN }',
                             'include { phase: TRAIN } exclude { phase: TEST }')
    with pytest.raises(NetDefinitionError, match="'train_only'.*both include and exclude"):
        make_net(text)


def test_automatic_split_names_and_diff_sum():
    text = """
    force_backward: true
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "a" type: "ReLU" bottom: "x" top: "ya" }
    layer { name: "b" type: "ReLU" bottom: "x" top: "yb" }
    """
    net = make_net(text)
    assert list(net.blobs) == ["x", "x_input_0_split_0", "x_input_0_split_1", "ya", "yb"]
    assert net._layer_names == ["input", "x_input_0_split", "a", "b"]
    assert net.layers[1].type == "Split"
    x = np.array([[1.0, -2.0, 3.0], [-1.0, 2.0, 0.5]], np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    net.blobs["ya"].diff[...] = 1.0
    net.blobs["yb"].diff[...] = 2.0
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, 3.0 * (x > 0))


def test_loss_top_consumed_elsewhere_gets_a_split_with_the_weight():
    text = """
    layer { name: "input" type: "Input" top: "x" top: "y"
            input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "x" bottom: "y" top: "loss"
            loss_weight: 2 }
    layer { name: "after" type: "ReLU" bottom: "loss" top: "r" }
    """
    net = make_net(text)
    split = net.layer_dict["loss_loss_0_split"]
    assert split._loss_weights == [2.0, 0.0]
    assert net.layer_dict["loss"]._loss_weights == [1.0]


def test_in_place_layer_shares_the_blob():
    text = """
    force_backward: true
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 4 } } }
    layer { name: "relu" type: "ReLU" bottom: "x" top: "x" }
    """
    net = make_net(text)
    assert list(net.blobs) == ["x"]
    net.blobs["x"].data[...] = [-1, 2, -3, 4]
    net.forward()
    np.testing.assert_array_equal(net.blobs["x"].data, [0, 2, 0, 4])


def test_duplicate_top_is_an_error():
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 4 } } }
    layer { name: "r1" type: "ReLU" bottom: "x" top: "y" }
    layer { name: "r2" type: "ReLU" bottom: "y" top: "x" }
    """
    with pytest.raises(NetDefinitionError, match="'r2'.*top 0 'x'.*several layers"):
        make_net(text)


def test_loss_weights_and_total_loss():
    net = make_net(LINREG)
    assert net.blob_loss_weights["loss"] == 1.0
    assert net.blobs["loss"].shape == ()
    assert float(net.blobs["loss"].diff) == 1.0
    net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal((4, 3))
    loss = net._forward()
    assert loss == pytest.approx(float(net.blobs["loss"].data))


def test_backward_planning_without_force_backward():
    net = make_net(LINREG)
    # the input layer needs no backward; the label bottom of the loss gets none
    assert net.layer_need_backward == [False, True, True]
    assert net.bottom_need_backward[2] == [True, False]
    net.blobs["data"].data[...] = 1.0
    net.forward()
    net.backward()
    assert not net.blobs["label"].diff.any()
    assert not net.blobs["data"].diff.any()


def test_force_backward_reaches_inputs_but_not_labels_of_softmax_loss():
    text = """
    force_backward: true
    layer { name: "input" type: "Input" top: "x" top: "y"
            input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "y" top: "loss" }
    """
    net = make_net(text)
    assert net.bottom_need_backward[1] == [True, False]
    net.blobs["x"].data[...] = [[1, 2, 3], [3, 2, 1]]
    net.blobs["y"].data[...] = [0, 2]
    net.forward()
    net.backward()
    assert net.blobs["x"].diff.any()
    assert not net.blobs["y"].diff.any()


def test_propagate_down_false_skips_that_bottom_and_its_producer():
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ipa" type: "InnerProduct" bottom: "x" top: "a"
            inner_product_param { num_output: 3 %s } }
    layer { name: "ipb" type: "InnerProduct" bottom: "x" top: "b"
            inner_product_param { num_output: 3 %s } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss"
            propagate_down: true propagate_down: false }
    """ % (IP_FILLERS, IP_FILLERS)
    net = make_net(text)
    assert net.layer_need_backward[net._layer_names.index("ipb")] is False
    net.blobs["x"].data[...] = 1.0
    net.forward()
    net.backward()
    assert net.blobs["a"].diff.any() and not net.blobs["b"].diff.any()
    assert net.params["ipa"][0].diff.any() and not net.params["ipb"][0].diff.any()


def test_an_unrequested_recurrent_diff_reaches_a_split_as_in_caffe():
    """Caffe's LSTM writes its input's diff whatever propagate_down says, and the Split that
    feeds it sums that diff with its other branch's: propagate_down false on the LSTM changes
    nothing for the InnerProduct below (neocaffe keeps Caffe's numbers)."""
    base = """
    layer { name: "in" type: "Input" top: "x" top: "cont"
            input_param { shape { dim: 3 dim: 2 dim: 4 } shape { dim: 3 dim: 2 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "f"
            inner_product_param { num_output: 4 axis: 2 %s } }
    layer { name: "r1" type: "Reduction" bottom: "f" top: "l1" loss_weight: 1
            reduction_param { operation: SUMSQ } }
    """ % IP_FILLERS
    lstm = """
    layer { name: "lstm" type: "LSTM" bottom: "f" bottom: "cont" top: "h" %s
            recurrent_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
    layer { name: "r2" type: "Reduction" bottom: "h" top: "l2" loss_weight: 1
            reduction_param { operation: SUMSQ } }
    """
    x = np.random.default_rng(0).standard_normal((3, 2, 4))

    def ip_diff(text):
        caffe.set_random_seed(1)
        net = make_net(text)
        net.blobs["x"].data[...] = x
        net.blobs["cont"].data[...] = 0
        net.forward()
        net.backward()
        return net.params["ip"][0].diff.copy()

    skipped = ip_diff(base + lstm % "propagate_down: false propagate_down: false")
    np.testing.assert_array_equal(skipped, ip_diff(base + lstm % ""))
    assert not np.allclose(skipped, ip_diff(base))


def test_force_backward_overrides_propagate_down_as_in_caffe():
    text = """
    force_backward: true
    layer { name: "input" type: "Input" top: "a" top: "b"
            input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss"
            propagate_down: true propagate_down: false }
    """
    net = make_net(text)
    assert net.bottom_need_backward[1] == [True, True]


def test_propagate_down_count_must_match_bottoms():
    text = """
    layer { name: "input" type: "Input" top: "a" top: "b"
            input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss"
            propagate_down: true }
    """
    with pytest.raises(NetDefinitionError, match="'loss'.*1 propagate_down values for 2"):
        make_net(text)


def test_layers_not_under_a_loss_need_no_backward():
    text = LINREG + """
    layer { name: "side" type: "ReLU" bottom: "data" top: "side" }
    """
    net = make_net(text)
    assert net.layer_need_backward[net._layer_names.index("side")] is False


def test_shared_params_have_one_memory_and_summed_diffs():
    text = """
    layer { name: "input" type: "Input" top: "x" top: "t"
            input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 2 } } }
    layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "y1"
            param { name: "w" } param { name: "b" } inner_product_param { num_output: 2 %s } }
    layer { name: "ip2" type: "InnerProduct" bottom: "x" top: "y2"
            param { name: "w" } param { name: "b" } inner_product_param { num_output: 2 %s } }
    layer { name: "l1" type: "EuclideanLoss" bottom: "y1" bottom: "t" top: "l1" }
    layer { name: "l2" type: "EuclideanLoss" bottom: "y2" bottom: "t" top: "l2" }
    """ % (IP_FILLERS, IP_FILLERS)
    net = make_net(text)
    w1, w2 = net.params["ip1"][0], net.params["ip2"][0]
    np.testing.assert_array_equal(w1.data, w2.data)
    w1.data[0, 0] = 42.0
    assert w2.data[0, 0] == 42.0
    assert len(net.learnable_params) == 2
    net.blobs["x"].data[...] = np.random.default_rng(1).standard_normal((2, 3))
    net.forward()
    net.backward()
    g_shared = net.params["ip1"][0].diff.copy()
    # the same net without sharing gives two diffs that add up to the shared one
    unshared = make_net(text.replace('param { name: "w" } param { name: "b" }', ""))
    for name in ("ip1", "ip2"):
        for j in range(2):
            unshared.params[name][j].data[...] = net.params[name][j].data
    unshared.blobs["x"].data[...] = net.blobs["x"].data
    unshared.forward()
    unshared.backward()
    np.testing.assert_allclose(
        g_shared, unshared.params["ip1"][0].diff + unshared.params["ip2"][0].diff, rtol=1e-5)


def test_shared_param_shape_mismatch():
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "y1"
            param { name: "w" } inner_product_param { num_output: 2 bias_term: false } }
    layer { name: "ip2" type: "InnerProduct" bottom: "x" top: "y2"
            param { name: "w" } inner_product_param { num_output: 3 bias_term: false } }
    """
    with pytest.raises(ShapeMismatchError, match="'w'.*'ip1'.*'ip2'"):
        make_net(text)


def test_param_diffs_accumulate_and_bottom_diffs_are_overwritten():
    net = make_net(LINREG.replace('name: "linreg"', 'name: "linreg" force_backward: true'))
    net.blobs["data"].data[...] = np.random.default_rng(2).standard_normal((4, 3))
    net.forward()
    net.backward()
    w1 = net.params["fc"][0].diff.copy()
    d1 = net.blobs["data"].diff.copy()
    net.backward()
    np.testing.assert_allclose(net.params["fc"][0].diff, 2 * w1, rtol=1e-6)
    np.testing.assert_allclose(net.blobs["data"].diff, d1, rtol=1e-6)
    net.clear_param_diffs()
    assert not net.params["fc"][0].diff.any()


def test_lr_mult_zero_params_get_no_diff_without_force_backward():
    text = LINREG.replace('inner_product_param', 'param { lr_mult: 0 } param { lr_mult: 0 } '
                          'inner_product_param')
    net = make_net(text)
    assert net.layer_need_backward[1] is False
    assert net.params_lr == [0.0, 0.0]
    net.blobs["data"].data[...] = 1.0
    net.forward()
    net.backward()
    assert not net.params["fc"][0].diff.any()


def test_auto_top_blob_for_loss_without_top():
    text = """
    layer { name: "input" type: "Input" top: "a" top: "b"
            input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" }
    """
    net = make_net(text)
    assert list(net.blobs)[-1] == "(automatic)"


def test_outputs_are_sorted_by_name_and_inputs_are_input_tops():
    text = """
    layer { name: "input" type: "Input" top: "z" top: "a"
            input_param { shape { dim: 2 } } }
    layer { name: "r1" type: "ReLU" bottom: "z" top: "zz" }
    layer { name: "r2" type: "ReLU" bottom: "a" top: "aa" }
    """
    net = make_net(text)
    assert net.inputs == ["z", "a"]
    assert net.outputs == ["aa", "zz"]


def test_legacy_input_fields_become_an_input_layer():
    text = """
    name: "legacy"
    input: "data"
    input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4
    layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }
    """
    net = make_net(text, caffe.TEST)
    assert net.blobs["data"].shape == (1, 2, 3, 4)
    assert net.layers[0].type == "Input"
    assert net.inputs == ["data"]


def test_layers_know_when_no_backward_will_come():
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 4
            dim: 4 } } }
    layer { name: "pool" type: "Pooling" bottom: "x" top: "p"
            pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
    layer { name: "scale" type: "Scale" bottom: "p" top: "p" scale_param { bias_term: true } }
    """
    net = make_net(text, caffe.TEST)
    assert [layer._need_backward for layer in net.layers] == [False, False, False]
    net.blobs["x"].data[...] = np.arange(32).reshape(1, 2, 4, 4)
    net.forward()
    assert net.layer_dict["pool"].argmax is None
    assert net.layer_dict["scale"]._saved is None
    np.testing.assert_array_equal(net.blobs["p"].data[0, 0], [[5, 7], [13, 15]])


def test_blobs_in_a_layer_definition_replace_its_fillers():
    # Caffe's Layer constructor takes LayerParameter.blobs, and the layer skips its fillers;
    # a Python layer finds them in self.blobs when its setup runs
    param = net_param("""
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 } } }
        layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y"
          inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } }
          blobs { shape { dim: 2 dim: 3 } data: [1, 2, 3, 4, 5, 6] }
          blobs { shape { dim: 2 } data: [0.5, -0.5] } }
    """)
    net = caffe.Net(param, caffe.TEST)
    np.testing.assert_array_equal(net.params["fc"][0].data, [[1, 2, 3], [4, 5, 6]])
    net.blobs["x"].data[...] = 1
    np.testing.assert_array_equal(net.forward()["y"], [[6.5, 14.5]])
    del param.layer[1].blobs[1]
    with pytest.raises(LayerSetupError, match=r"'fc' \(InnerProduct\) carries 1 parameter "
                                                 r"blobs in its definition but has 2"):
        caffe.Net(param, caffe.TEST)
