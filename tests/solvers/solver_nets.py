"""Small nets and an independent NumPy model of Caffe's solvers, for the solver tests.

The regression net is ``y_hat = x W^T + b`` with a Euclidean loss ``|y_hat - y|^2 / (2N)``, fed by
Input blobs that keep their data between iterations, so every iteration sees the same batch and
the gradient has a closed form: ``dW = r^T x``, ``db = sum(r)``, ``r = (y_hat - y) / N``.
"""

from __future__ import annotations

import math

import numpy as np
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2

N, D_IN, D_OUT = 6, 4, 3

REGRESSION_NET = """
name: "regression"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: %d dim: %d } } }
layer { name: "y" type: "Input" top: "y" input_param { shape { dim: %d dim: %d } } }
layer {
  name: "ip" type: "InnerProduct" bottom: "x" top: "pred"
  param { lr_mult: 1 decay_mult: 1 }
  param { lr_mult: 2 decay_mult: 0 }
  inner_product_param {
    num_output: %d
    weight_filler { type: "gaussian" std: 0.5 }
    bias_filler { type: "constant" value: 0.1 }
  }
}
layer { name: "loss" type: "EuclideanLoss" bottom: "pred" bottom: "y" top: "loss" }
""" % (N, D_IN, N, D_OUT, D_OUT)

LR_MULT = (1.0, 2.0)
DECAY_MULT = (1.0, 0.0)


def regression_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D_IN)).astype(np.float32)
    y = rng.standard_normal((N, D_OUT)).astype(np.float32)
    return x, y


def solver_param(text: str = "", net: str = REGRESSION_NET) -> caffe_pb2.SolverParameter:
    """A SolverParameter with the regression net inline, plus ``text``."""
    p = caffe_pb2.SolverParameter()
    text_format.Merge(text, p)
    text_format.Merge(net, p.net_param)
    if not p.HasField("base_lr"):
        p.base_lr = 0.05
    if not p.HasField("lr_policy"):
        p.lr_policy = "fixed"
    if not p.HasField("random_seed"):
        p.random_seed = 7
    return p


def regression_solver(text: str = "", seed: int = 0) -> caffe.solvers.Solver:
    solver = caffe.get_solver(solver_param(text))
    x, y = regression_data(seed)
    solver.net.blobs["x"].data[...] = x
    solver.net.blobs["y"].data[...] = y
    return solver


def params_of(solver) -> list[np.ndarray]:
    return [b.data.astype(np.float64).copy() for b in solver.net.params["ip"]]


# ---------------------------------------------------------------------------- the reference
def reference_rate(p: caffe_pb2.SolverParameter, it: int, step: int) -> tuple[float, int]:
    """Caffe's lr policies, written out separately from caffe.solvers.lr_policy."""
    kind = p.lr_policy
    if kind == "fixed":
        return p.base_lr, step
    if kind == "step":
        return p.base_lr * p.gamma ** (it // p.stepsize), it // p.stepsize
    if kind == "exp":
        return p.base_lr * p.gamma ** it, step
    if kind == "inv":
        return p.base_lr * (1 + p.gamma * it) ** -p.power, step
    if kind == "multistep":
        if step < len(p.stepvalue) and it >= p.stepvalue[step]:
            step += 1
        return p.base_lr * p.gamma ** step, step
    if kind == "poly":
        return p.base_lr * (1 - it / p.max_iter) ** p.power, step
    if kind == "sigmoid":
        return p.base_lr / (1 + math.exp(-p.gamma * (it - p.stepsize))), step
    raise ValueError(kind)


def reference_train(p: caffe_pb2.SolverParameter, params: list[np.ndarray], x: np.ndarray,
                    y: np.ndarray, steps: int) -> tuple[list[np.ndarray], list[float]]:
    """Train the regression net for ``steps`` iterations in float64 the way Caffe's solvers do;
    returns the final params and the loss of every iteration."""
    w, b = (a.astype(np.float64).copy() for a in params)
    x, y = x.astype(np.float64), y.astype(np.float64)
    kind = p.type
    two = kind in ("AdaDelta", "Adam")
    h1 = [np.zeros_like(w), np.zeros_like(b)]
    h2 = [np.zeros_like(w), np.zeros_like(b)] if two else None
    step = 0
    losses = []
    for it in range(steps):
        pred = x @ w.T + b
        losses.append(float(np.sum((pred - y) ** 2) / (2 * len(x))))
        r = (pred - y) / len(x)
        grads = [p.iter_size * (r.T @ x), p.iter_size * r.sum(0)]
        rate, step = reference_rate(p, it, step)
        if p.clip_gradients >= 0:
            norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
            if norm > p.clip_gradients:
                grads = [g * (p.clip_gradients / norm) for g in grads]
        grads = [g / p.iter_size for g in grads]
        updates = []
        for i, (value, g) in enumerate(zip((w, b), grads)):
            decay = p.weight_decay * DECAY_MULT[i]
            if p.regularization_type == "L1":
                g = g + decay * np.sign(value)
            else:
                g = g + decay * value
            lr = rate * LR_MULT[i]
            if kind == "SGD":
                h1[i] = p.momentum * h1[i] + lr * g
                u = h1[i]
            elif kind == "Nesterov":
                old = h1[i]
                h1[i] = p.momentum * old + lr * g
                u = (1 + p.momentum) * h1[i] - p.momentum * old
            elif kind == "AdaGrad":
                h1[i] = h1[i] + g * g
                u = lr * g / (np.sqrt(h1[i]) + p.delta)
            elif kind == "RMSProp":
                h1[i] = p.rms_decay * h1[i] + (1 - p.rms_decay) * g * g
                u = lr * g / (np.sqrt(h1[i]) + p.delta)
            elif kind == "AdaDelta":
                h1[i] = p.momentum * h1[i] + (1 - p.momentum) * g * g
                v = g * np.sqrt((h2[i] + p.delta) / (h1[i] + p.delta))
                h2[i] = p.momentum * h2[i] + (1 - p.momentum) * v * v
                u = lr * v
            elif kind == "Adam":
                t = it + 1
                h1[i] = p.momentum * h1[i] + (1 - p.momentum) * g
                h2[i] = p.momentum2 * h2[i] + (1 - p.momentum2) * g * g
                corr = math.sqrt(1 - p.momentum2 ** t) / (1 - p.momentum ** t)
                u = lr * corr * h1[i] / (np.sqrt(h2[i]) + p.delta)
            else:
                raise ValueError(kind)
            updates.append(u)
        w = w - updates[0]
        b = b - updates[1]
    return [w, b], losses
