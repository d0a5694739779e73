"""Every update rule, lr policy and gradient option against an independent float64 model of
Caffe's solvers (tests/solvers/solver_nets.py)."""

from __future__ import annotations

import numpy as np
import pytest
from solver_nets import (
    params_of,
    reference_rate,
    reference_train,
    regression_data,
    regression_solver,
    solver_param,
)

import caffe
from caffe.solvers.lr_policy import learning_rate

STEPS = 6

RULES = {
    "SGD": "momentum: 0.9",
    "Nesterov": "momentum: 0.9",
    "AdaGrad": "delta: 1e-6",
    "RMSProp": "rms_decay: 0.9 delta: 1e-6",
    "AdaDelta": "momentum: 0.95 delta: 1e-6 base_lr: 1.0",
    "Adam": "momentum: 0.9 momentum2: 0.999 delta: 1e-8 base_lr: 0.01",
}

OPTIONS = {
    "plain": "",
    "l2": "weight_decay: 0.01",
    "l1": "weight_decay: 0.01 regularization_type: 'L1'",
    "iter_size": "iter_size: 3 weight_decay: 0.01",
    "clip": "clip_gradients: 0.05",
    "clip_iter_size": "clip_gradients: 0.05 iter_size: 2",
}


def check_against_reference(text: str, steps: int = STEPS) -> caffe.solvers.Solver:
    solver = regression_solver(text)
    start = params_of(solver)
    losses = []
    for _ in range(steps):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    x, y = regression_data()
    want, want_losses = reference_train(solver.param, start, x, y, steps)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5, atol=1e-6)
    for got, ref in zip(params_of(solver), want):
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-6)
    assert solver.iter == steps
    return solver


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("rule", sorted(RULES))
def test_update_rule_matches_reference(rule, option):
    solver = check_against_reference(f"type: '{rule}' {RULES[rule]} {OPTIONS[option]}")
    assert type(solver).type_name == rule
    assert isinstance(solver, caffe.SGDSolver)


POLICIES = {
    "fixed": "",
    "step": "gamma: 0.5 stepsize: 2",
    "exp": "gamma: 0.9",
    "inv": "gamma: 0.1 power: 0.75",
    "multistep": "gamma: 0.5 stepvalue: 1 stepvalue: 3 stepvalue: 4",
    "poly": "power: 1.5 max_iter: 10",
    "sigmoid": "gamma: 0.5 stepsize: 3",
    "sigmoid_decay": "gamma: -0.5 stepsize: 0",  # Caffe accepts both: a decay from base_lr/2
}


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_lr_policy_trains_like_reference(policy):
    check_against_reference(f"type: 'SGD' momentum: 0.5 lr_policy: '{policy.split('_')[0]}' "
                            f"{POLICIES[policy]}")


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_solver_lr_is_the_rate_of_the_next_update(policy):
    solver = regression_solver(f"lr_policy: '{policy.split('_')[0]}' {POLICIES[policy]}")
    step = 0
    for it in range(8):
        want, step = reference_rate(solver.param, it, step)
        assert solver.lr == pytest.approx(np.float32(want), rel=1e-6)
        assert solver.lr == float(np.float32(solver.lr))  # rounded to float32 as in Caffe
        solver.step(1)


def test_multistep_advances_one_step_per_iteration():
    p = solver_param("lr_policy: 'multistep' gamma: 0.1 stepvalue: 2 stepvalue: 2 "
                     "stepvalue: 5")
    rates, step = [], 0
    for it in range(7):
        rate, step = learning_rate(p, it, step)
        rates.append(rate)
    want = np.array([1, 1, 0.1, 0.01, 0.01, 0.001, 0.001]) * p.base_lr
    np.testing.assert_allclose(rates, want, rtol=1e-6)


def test_poly_past_max_iter_and_sigmoid_far_out_do_not_raise():
    p = solver_param("lr_policy: 'poly' power: 0.5 max_iter: 4")
    assert np.isnan(learning_rate(p, 6, 0)[0])
    p = solver_param("lr_policy: 'sigmoid' gamma: 10 stepsize: 500")
    assert learning_rate(p, 0, 0)[0] == 0.0
    p = solver_param("lr_policy: 'exp' gamma: 10")
    assert learning_rate(p, 10000, 0)[0] == float("inf")


def test_setting_base_lr_through_param_changes_the_update():
    solver = regression_solver("momentum: 0")
    solver.param.base_lr = 0.0
    before = params_of(solver)
    solver.step(2)
    for a, b in zip(before, params_of(solver)):
        np.testing.assert_array_equal(a, b)
    solver.param.base_lr = 0.2
    assert solver.lr == pytest.approx(0.2)
    solver.step(1)
    assert not np.array_equal(before[0], params_of(solver)[0])


def test_lr_mult_zero_freezes_a_param_and_history_follows_caffe():
    net = solver_param().net_param
    net.layer[2].param[1].lr_mult = 0
    p = solver_param("momentum: 0.9 weight_decay: 0.1")
    p.net_param.CopyFrom(net)
    solver = caffe.get_solver(p)
    bias = solver.net.params["ip"][1].data.copy()
    solver.step(3)
    np.testing.assert_array_equal(solver.net.params["ip"][1].data, bias)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_frozen_param_is_left_untouched_and_its_diff_holds_caffes_zero_update(rule):
    """lr_mult 0 from the start: the update is exactly 0, so the solver does not write the
    parameter at all (its torch version stays, so values derived from it stay cached); the
    diff still holds the update, 0, as in Caffe."""
    net = solver_param().net_param
    net.layer[2].param[1].lr_mult = 0
    p = solver_param(f"type: '{rule}' {RULES[rule]} weight_decay: 0.1")
    p.net_param.CopyFrom(net)
    solver = caffe.get_solver(p)
    bias = solver.net.params["ip"][1]
    version, before = bias.tensor._version, bias.data.copy()
    solver.step(3)
    assert bias.tensor._version == version
    np.testing.assert_array_equal(bias.data, before)
    np.testing.assert_array_equal(bias.diff, 0)


def test_a_param_frozen_after_moving_keeps_its_momentum(tmp_path):
    """A state whose history moves a parameter that is now frozen (lr_mult 0): Caffe still
    applies momentum * history to it, and so does the restored solver."""
    first = regression_solver("momentum: 0.9")
    first.param.snapshot_prefix = str(tmp_path / "s")
    first.step(2)
    first.snapshot()
    net = solver_param().net_param
    net.layer[2].param[1].lr_mult = 0
    p = solver_param("momentum: 0.9")
    p.net_param.CopyFrom(net)
    frozen = caffe.get_solver(p)
    frozen.restore(str(tmp_path / "s_iter_2.solverstate"))
    bias = frozen.net.params["ip"][1]
    before, velocity = bias.data.copy(), frozen.history[1].numpy().copy()
    assert np.any(velocity)
    frozen.step(1)
    np.testing.assert_allclose(bias.data, before - np.float32(0.9) * velocity, rtol=1e-6)


def test_update_leaves_the_update_in_the_diff():
    solver = regression_solver("momentum: 0.9")
    solver.step(2)
    before = params_of(solver)
    solver.net.clear_param_diffs()
    solver.net.forward_backward()
    solver.apply_update()
    after = params_of(solver)
    for b, a, blob, h in zip(before, after, solver.net.params["ip"], solver.history):
        np.testing.assert_allclose(b - a, blob.diff, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(blob.diff, h.numpy())
    assert solver.iter == 2  # apply_update alone does not count an iteration


def test_updates_keep_the_dtype_and_do_not_grow_memory():
    solver = regression_solver("type: 'Adam'")
    solver.step(2)
    assert all(h.dtype == solver.net.params["ip"][0].tensor.dtype for h in solver.history)
    assert len(solver.history) == 4
