"""A BatchNorm applies the in-place Scale after it within its own pass (one pass over the
blob, like PyTorch's affine batch norm) in uninspected passes: forward only with global
statistics, forward and backward with batch statistics. Data, diffs, parameter diffs and
running statistics are those of running both layers."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2

NET = """
%s
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "%s" }
layer { name: "scale" type: "Scale" bottom: "%s" top: "%s" scale_param { bias_term: %s } }
layer { name: "relu" type: "ReLU" bottom: "%s" top: "%s" }
"""


def _net(in_place: bool = True, bias: bool = True, force_backward: bool = False,
         phase=caffe.TEST) -> caffe.Net:
    top = "conv" if in_place else "bn"
    text = NET % ("force_backward: true" if force_backward else "", top, top, top,
                  str(bias).lower(), top, top)
    caffe.set_random_seed(7)  # the same conv weights in every net built here
    net = caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)
    rng = np.random.default_rng(3)
    mean, var, factor = net.params["bn"]
    mean.data[...] = rng.standard_normal(4) * 2
    var.data[...] = rng.uniform(0.5, 2, 4) * 2
    factor.data[...] = 2
    for p in net.params["scale"]:
        p.data[...] = rng.standard_normal(p.data.shape)
    net.blobs["data"].data[...] = rng.standard_normal((2, 3, 5, 5))
    return net


def _reference(net: caffe.Net) -> np.ndarray:
    net.before_forward(lambda li: None)  # a callback: every layer runs on its own
    net.forward()
    return net.blobs[net.outputs[0]].data.copy()


@pytest.mark.parametrize("in_place, bias", [(True, True), (True, False), (False, True)])
def test_folded_pair_gives_the_values_of_both_layers(in_place, bias):
    net = _net(in_place, bias)
    assert net.layer_dict["scale"].folded_at == list(net._layer_names).index("bn")
    net.forward()
    folded = net.blobs[net.outputs[0]].data.copy()
    np.testing.assert_allclose(folded, _reference(_net(in_place, bias)), rtol=1e-5, atol=1e-6)


def test_a_partial_forward_runs_the_layers_separately():
    net, ref = _net(), _net()
    expect = _reference(ref)
    net.forward(end="bn")
    net.forward(start="scale")
    np.testing.assert_allclose(net.blobs["conv"].data, expect, rtol=1e-5, atol=1e-6)


def test_no_folding_out_of_place_where_a_backward_is_needed():
    assert _net(in_place=False, force_backward=True).layer_dict["scale"].folded_at is None


def test_no_folding_where_only_the_scale_needs_a_backward():
    """Learning s and b above a BatchNorm that needs no backward: the net would skip the
    BatchNorm's backward, which computes the folded pair's."""
    text = """
    layer { name: "data" type: "Input" top: "data" top: "target"
      input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
    layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data"
      param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }
    layer { name: "scale" type: "Scale" bottom: "data" top: "data" scale_param { bias_term: true } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "data" bottom: "target" top: "loss" }
    """
    net = caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TRAIN)
    assert net._layer_need_backward[1:3] == [False, True]
    assert net.layer_dict["scale"].folded_at is None
    rng = np.random.default_rng(2)
    net.blobs["data"].data[...] = rng.standard_normal((2, 3, 4, 4))
    net.blobs["target"].data[...] = rng.standard_normal((2, 3, 4, 4))
    net.forward()
    net.backward()
    assert np.abs(net.params["scale"][0].diff).sum() > 0


def _train_state(net: caffe.Net) -> dict[str, np.ndarray]:
    out = {name: b.data.copy() for name, b in net.blobs.items()}
    out.update({f"{name} diff": b.diff.copy() for name, b in net.blobs.items()})
    for name, blobs in net.params.items():
        for j, b in enumerate(blobs):
            out[f"{name}[{j}]"] = b.data.copy()
            out[f"{name}[{j}] diff"] = b.diff.copy()
    return out


def _train_net(in_place: bool = True, bias: bool = True, batch: int = 2,
               global_stats: bool = False) -> caffe.Net:
    net = _net(in_place, bias, force_backward=True, phase=caffe.TEST if global_stats
               else caffe.TRAIN)
    if batch != 2:
        net.blobs["data"].reshape(batch, 3, 5, 5)
        net.blobs["data"].data[...] = np.random.default_rng(4).standard_normal((batch, 3, 5, 5))
        net.reshape()
    top = net.blobs[net.outputs[0]]
    top.diff[...] = np.random.default_rng(5).standard_normal(top.shape)
    return net


def _check_equal(got: dict, expect: dict) -> None:
    assert got.keys() == expect.keys()
    for k in expect:
        np.testing.assert_allclose(got[k], expect[k], rtol=2e-5, atol=2e-6, err_msg=k)


def _unfolded_step(net: caffe.Net) -> dict[str, np.ndarray]:
    net.before_forward(lambda li: None)  # callbacks: every layer runs on its own
    net.before_backward(lambda li: None)
    net.forward()
    net.backward()
    return _train_state(net)


def test_batch_statistics_fold_only_an_in_place_batchnorm():
    """Out of place, the BatchNorm's top diff must end up holding the Scale's bottom diff."""
    assert _train_net(in_place=False).layer_dict["scale"].folded_at is None


@pytest.mark.parametrize("bias, batch, global_stats", [
    (True, 2, False), (False, 2, False), (True, 1, False), (True, 2, True), (False, 1, True)])
def test_the_pair_folds_forward_and_backward(bias, batch, global_stats):
    in_place = True
    net = _train_net(in_place, bias, batch, global_stats)
    assert net.layer_dict["scale"].folded_at is not None
    for _ in range(2):  # running sums and accumulated parameter diffs of two passes
        net.forward()
        net.backward()
    assert net.layer_dict["bn"].applied_scale
    ref = _train_net(in_place, bias, batch, global_stats)
    _unfolded_step(ref)
    _check_equal(_train_state(net), _unfolded_step(ref))


@pytest.mark.parametrize("global_stats", [False, True])
def test_a_backward_that_stops_between_the_pair_runs_the_scale_on_its_own(global_stats):
    net, ref = _train_net(global_stats=global_stats), _train_net(global_stats=global_stats)
    net.forward()  # folded
    net.backward(start="relu", end="scale")
    net.backward(start="bn")
    expect = _unfolded_step(ref)
    _check_equal(_train_state(net), expect)


def test_a_folded_forward_with_an_inspected_backward():
    net, ref = _train_net(), _train_net()
    net.forward()  # folded
    net.before_backward(lambda li: None)
    net.backward()
    _check_equal(_train_state(net), _unfolded_step(ref))


@pytest.mark.parametrize("global_stats", [False, True])
def test_solver_steps_with_the_folded_pair_equal_steps_without(global_stats):
    """Solver.step folds the pair and releases intermediate diffs; with a callback neither
    happens. Three SGD steps must leave the same parameters and running statistics."""
    stats = "batch_norm_param { use_global_stats: true }" if global_stats else ""
    text = NET % ("", "conv", "conv", "conv", "true", "conv", "conv")
    text = text.replace('top: "conv" }', f'top: "conv" {stats} }}', 1)
    text = text.replace('layer { name: "data" type: "Input" top: "data"\n  input_param { shape '
                        '{ dim: 2 dim: 3 dim: 5 dim: 5 } } }',
                        'layer { name: "data" type: "Input" top: "data" top: "target"\n'
                        '  input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } '
                        'shape { dim: 2 dim: 4 dim: 3 dim: 3 } } }')
    text += ('layer { name: "loss" type: "EuclideanLoss" bottom: "conv" bottom: "target" '
             'top: "loss" }\n')
    results = []
    for callback in (False, True):
        caffe.set_random_seed(7)
        sp = caffe_pb2.SolverParameter(type="SGD", base_lr=0.1, momentum=0.9,
                                       weight_decay=1e-3, lr_policy="fixed", display=0,
                                       max_iter=10)
        sp.train_net_param.CopyFrom(text_format.Parse(text, caffe_pb2.NetParameter()))
        solver = caffe.get_solver(sp)
        net = solver.net
        assert net.layer_dict["scale"].folded_at is not None
        rng = np.random.default_rng(3)
        net.params["bn"][0].data[...] = rng.standard_normal(4)
        net.params["bn"][1].data[...] = rng.uniform(0.5, 2, 4)
        net.params["bn"][2].data[...] = 1
        net.blobs["data"].data[...] = rng.standard_normal((2, 3, 5, 5))
        net.blobs["target"].data[...] = rng.standard_normal((2, 4, 3, 3))
        if callback:
            net.before_forward(lambda li: None)
        solver.step(3)
        assert net.layer_dict["bn"].applied_scale != callback
        results.append({f"{n}[{j}]": b.data.copy() for n, bs in net.params.items()
                        for j, b in enumerate(bs)})
    for k in results[1]:
        np.testing.assert_allclose(results[0][k], results[1][k], rtol=2e-5, atol=2e-6,
                                   err_msg=k)


def _forward(net: caffe.Net) -> np.ndarray:
    net.forward()
    return net.blobs[net.outputs[0]].data.copy()


WRITES = {
    # a NumPy write through a view that is dropped at once
    "numpy": lambda blob, v: blob.data.__setitem__(Ellipsis, v),
    # an in-place torch write (torch's version counter)
    "torch": lambda blob, v: blob.tensor.copy_(blob.tensor.new_tensor(v)),
    # new memory
    "assign": lambda blob, v: setattr(blob, "tensor", blob.tensor.new_tensor(v)),
}


@pytest.mark.parametrize("how", sorted(WRITES))
@pytest.mark.parametrize("layer, index", [("bn", 0), ("bn", 1), ("bn", 2), ("scale", 0),
                                          ("scale", 1)])
def test_derived_statistics_follow_every_write_to_the_blobs(how, layer, index):
    """The derived statistics (and the folded Scale's terms) are kept between passes; any
    write to a BatchNorm or Scale blob, through NumPy or torch, is seen by the next pass."""
    net, ref = _net(), _net()
    _forward(net)  # derives and keeps them
    value = np.random.default_rng(5).uniform(0.5, 3, net.params[layer][index].data.shape)
    for n in (net, ref):
        WRITES[how](n.params[layer][index], value)
    np.testing.assert_allclose(_forward(net), _reference(ref), rtol=1e-5, atol=1e-6)


def test_a_numpy_view_held_across_passes_is_seen():
    net, ref = _net(), _net()
    mean = net.params["bn"][0].data  # kept: a later write through it bypasses torch
    _forward(net)
    mean[...] = 1.5
    ref.params["bn"][0].data[...] = 1.5
    np.testing.assert_allclose(_forward(net), _reference(ref), rtol=1e-5, atol=1e-6)


def test_unchanged_blobs_are_not_derived_again():
    net = _net()
    bn = net.layer_dict["bn"]
    _forward(net)
    kept = bn._stats
    _forward(net)
    assert all(a is b for a, b in zip(bn._stats, kept))


TEST_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn"
  batch_norm_param { use_global_stats: true } }
"""


@pytest.mark.parametrize("held", [False, True])
def test_a_net_sharing_the_statistics_sees_numpy_writes_made_through_the_other(held):
    """A solver's test net shares the train net's parameter memory: a NumPy write through the
    train net's blob (a view used at once, or one kept) reaches the test net's next pass."""
    make = lambda: caffe.Net(text_format.Parse(TEST_NET, caffe_pb2.NetParameter()),  # noqa: E731
                             caffe.TEST)
    train, test = make(), make()
    for blob in train.params["bn"]:
        blob.data[...] = 1
    test.share_with(train)
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    test.blobs["data"].data[...] = x
    test.forward()
    mean = train.params["bn"][0].data if held else None
    if held:
        mean[...] = 2
    else:
        train.params["bn"][0].data[...] = 2
    test.forward()
    np.testing.assert_allclose(test.blobs["bn"].data, (x - 2) / np.sqrt(1 + 1e-5), rtol=1e-5)
    for _ in range(3):  # a solver shares again before every test pass
        test.share_with(train)
    assert len(train.params["bn"][0]._access.blobs) == 2


class ParamDiffReader:
    """An after_backward callback that reads only parameter diffs (as caffe.NCCL does)."""

    param_diffs_only = True

    def __init__(self, net: caffe.Net) -> None:
        self.net, self.seen = net, {}

    def __call__(self, li: int) -> None:
        self.seen[li] = [b.diff.copy() for b in self.net.layers[li].blobs]


def test_a_param_diffs_only_callback_keeps_the_fold():
    """The callback for the Scale comes after the BatchNorm's backward, which computes the
    Scale's parameter diffs: every layer's callback sees its final diffs."""
    net, ref = _train_net(), _train_net()
    reader = ParamDiffReader(net)
    net.after_backward(reader)
    net.forward()
    net.forward_backward(release_diffs=True)
    assert net.layer_dict["bn"].applied_scale
    names = list(net._layer_names)
    assert sorted(reader.seen) == list(range(len(names)))
    assert reader.seen[names.index("scale")][0].any()
    for li, diffs in reader.seen.items():
        for got, blob in zip(diffs, net.layers[li].blobs):
            np.testing.assert_array_equal(got, blob.diff)
    ref.forward()
    expect = _unfolded_step(ref)
    for name in ("conv", "scale"):
        for j, blob in enumerate(net.params[name]):
            np.testing.assert_allclose(blob.diff, expect[f"{name}[{j}] diff"], rtol=2e-5,
                                       atol=2e-6)
