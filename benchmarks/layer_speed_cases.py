"""The cases of the per-layer speed benchmark (benchmarks/layer_speed.py): for each registered
layer type, one or more realistic configurations and the "twin", the direct
``torch.nn.functional`` / torch expression of the same forward whose backward autograd computes.

A case factory takes the size mode ("full", "quick" or "tiny") and returns a :class:`Spec`.
Twins are written from the math (never calling neocaffe code); they receive the bottoms (leaves
requiring grad where the layer propagates) and the parameters (the layer's initial blobs, or
what ``twin_params`` makes of them) and return the tops they compare with.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from caffe._layers.recurrent.recurrent_base import cudnn_flattenable, kernel_precision

Tensors = list[torch.Tensor]

#: the issue's tighter targets; every other type must reach 1.3
TIGHT_TYPES = ("Convolution", "InnerProduct", "Pooling", "ReLU", "LRN", "BatchNorm", "Softmax")

#: registered types the benchmark does not time, with the reason
SKIPPED = {
    "Data": "reads an LMDB/LevelDB file: I/O-bound, no torch twin",
    "ImageData": "decodes image files: I/O-bound, no torch twin",
    "HDF5Data": "reads HDF5 files: I/O-bound, no torch twin",
    "HDF5Output": "writes HDF5 files: I/O-bound, no torch twin",
    "WindowData": "crops windows from image files: I/O-bound, no torch twin",
    "Input": "no computation (the user fills the tops)",
    "Parameter": "no computation (the top is the parameter blob itself)",
    "Python": "the user's own code (benchmarks/python_layer_copies.py times its data path)",
}


@dataclass
class Spec:
    """One benchmark configuration of a layer type.

    size: the printed size. bottoms: float32 CPU tensors (labels and indices stored as floats,
    as in Caffe blobs). twin: ``(bottoms, params) -> tops``. param: LayerParameter text besides
    name/type/bottom/top. grad: which bottoms get a diff (default: all but the class's
    ``no_force_backward_bottoms``). twin_params: maps the layer's initial parameter tensors to
    the twin's (then parameter gradients are not compared). param_grads: whether the params
    are learned (False for BatchNorm's statistics). in_place: the top is bottom 0 (the
    twin then gets a fresh copy of bottom 0 that it may overwrite).
    check: replaces the forward comparison for random layers ``(ours tops, twin tops) -> str``
    (empty when fine). manual_twin: a twin step without autograd (Silence).
    after_setup: called with the layer and the device after SetUp (MemoryData's arrays).
    twin_ready: called on the twin's parameter leaves once made, under ``torch.no_grad()``
    (the recurrent twins lay their weights out as nn.LSTM/nn.RNN do on cuDNN)."""

    size: str
    bottoms: Tensors
    twin: Callable[[Tensors, Tensors], Tensors] | None
    param: str = ""
    num_tops: int = 1
    grad: tuple[bool, ...] | None = None
    twin_params: Callable[[Tensors], Tensors] | None = None
    param_grads: bool = True
    in_place: bool = False
    phase: str = "TRAIN"
    check: Callable[[Tensors, Tensors], str] | None = None
    manual_twin: Callable[[Tensors], object] | None = None
    after_setup: Callable[[object, torch.device], None] | None = None
    twin_ready: Callable[[Tensors], None] | None = None
    note: str = ""


@dataclass
class Case:
    type: str
    variant: str
    factory: Callable[[str], Spec]

    @property
    def name(self) -> str:
        return f"{self.type} {self.variant}".strip()


CASES: list[Case] = []


def case(type_name: str, variant: str = ""):
    def register(factory: Callable[[str], Spec]) -> Callable[[str], Spec]:
        CASES.append(Case(type_name, variant, factory))
        return factory
    return register


# ---------------------------------------------------------------------------------- helpers
_GEN = torch.Generator()


def _seeded() -> torch.Generator:
    return _GEN.manual_seed(1234)


def pick(mode: str, full, quick, tiny):
    """The value for the size mode."""
    return {"full": full, "quick": quick, "tiny": tiny}[mode]


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=_seeded())


def rand(*shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=_seeded())


def labels(n: int, classes: int) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=_seeded()).float()


def fmt(shape) -> str:
    return "x".join(str(d) for d in shape)


def feature_shape(mode: str) -> tuple[int, int, int, int]:
    """An activation of a ResNet-sized net: 16x64x56x56 (quick: 4x64x56x56)."""
    return pick(mode, (16, 64, 56, 56), (4, 64, 56, 56), (2, 3, 5, 5))


def loss_shape(mode: str) -> tuple[int, int]:
    return pick(mode, (64, 1000), (64, 1000), (4, 10))


def channel_view(t: torch.Tensor, ndim: int = 4) -> torch.Tensor:
    return t.reshape((1, -1) + (1,) * (ndim - 2))


class DenseGrad(torch.autograd.Function):
    """Identity whose backward hands on a dense copy of a strided or expanded gradient: for a
    twin whose layer must give its bottom a dense diff (one NumPy ``.diff`` may write into)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return g.contiguous()


def _elementwise(type_name: str, fn: Callable[[torch.Tensor], torch.Tensor], param: str = "",
                 positive: bool = False) -> None:
    def factory(mode: str) -> Spec:
        shape = feature_shape(mode)
        x = rand(*shape) + 0.5 if positive else randn(*shape)
        return Spec(fmt(shape), [x], lambda b, p: [fn(b[0])], param)
    case(type_name)(factory)


# ---------------------------------------------------------------------------------- neuron
_elementwise("AbsVal", torch.abs)
_elementwise("BNLL", F.softplus)
_elementwise("Clip", lambda x: torch.clamp(x, -1.0, 1.0), "clip_param { min: -1 max: 1 }")
_elementwise("ELU", F.elu)
_elementwise("Exp", torch.exp)
_elementwise("Log", torch.log, positive=True)
_elementwise("Power", lambda x: torch.pow(x * 0.5 + 1.0, 2),
             "power_param { power: 2 scale: 0.5 shift: 1 }")
_elementwise("ReLU", F.relu)
_elementwise("Sigmoid", torch.sigmoid)
_elementwise("TanH", torch.tanh)
_elementwise("Swish", F.silu)
_elementwise("Threshold", lambda x: (x > 0).to(x.dtype))


def _dropout_factory(in_place: bool):
    def factory(mode: str) -> Spec:
        shape = feature_shape(mode)
        x = randn(*shape)

        def twin(b, p):
            return [F.dropout(b[0], 0.5, True, inplace=in_place)]

        def check(ours, tw):
            """Dropout draws its own mask: each output is 0 or 2 x, about half kept."""
            y = ours[0]
            if not bool((torch.isclose(y, 2 * x.to(y.device)) | (y == 0)).all()):
                return "outputs other than 0 and x / (1 - p)"
            kept = float((y != 0).float().mean())
            return "" if y.numel() < 1000 or 0.4 < kept < 0.6 else f"kept fraction {kept:.3f}"
        return Spec(fmt(shape), [x], twin, in_place=in_place, check=check)
    return factory


case("Dropout")(_dropout_factory(False))
case("Dropout", "in place")(_dropout_factory(True))


@case("ReLU", "in place")
def _relu_in_place(mode: str) -> Spec:
    shape = feature_shape(mode)

    return Spec(fmt(shape), [randn(*shape)], lambda b, p: [F.relu_(b[0])], in_place=True)


@case("PReLU")
def _prelu(mode: str) -> Spec:
    shape = feature_shape(mode)
    return Spec(fmt(shape), [randn(*shape)], lambda b, p: [F.prelu(b[0], p[0])])


@case("Bias")
def _bias(mode: str) -> Spec:
    shape = feature_shape(mode)
    return Spec(fmt(shape), [randn(*shape)], lambda b, p: [b[0] + channel_view(p[0])],
                "bias_param { filler { type: 'gaussian' } }")


def _scale_factory(in_place: bool):
    def factory(mode: str) -> Spec:
        shape = feature_shape(mode)

        def twin(b, p):
            s, c = channel_view(p[0]), channel_view(p[1])
            if in_place:
                return [b[0].mul_(s).add_(c)]
            return [torch.addcmul(c, b[0], s)]
        return Spec(fmt(shape), [randn(*shape)], twin,
                    "scale_param { bias_term: true filler { type: 'gaussian' } "
                    "bias_filler { type: 'gaussian' } }", in_place=in_place)
    return factory


case("Scale")(_scale_factory(False))
case("Scale", "in place")(_scale_factory(True))


@case("Softmax", "classifier")
def _softmax_classifier(mode: str) -> Spec:
    shape = loss_shape(mode)
    return Spec(fmt(shape), [randn(*shape)], lambda b, p: [torch.softmax(b[0], 1)])


@case("Softmax", "dense")
def _softmax_dense(mode: str) -> Spec:
    shape = pick(mode, (16, 21, 112, 112), (4, 21, 112, 112), (2, 3, 4, 5))
    return Spec(fmt(shape), [randn(*shape)], lambda b, p: [torch.softmax(b[0], 1)])


# ---------------------------------------------------------------------------------- common
def _batch_norm_factory(in_place: bool):
    def factory(mode: str) -> Spec:
        shape = feature_shape(mode)
        c = shape[1]

        def twin(b, p):  # (PyTorch has no in-place batch norm)
            return [F.batch_norm(b[0], p[0], p[1], None, None, True, 0.001, 1e-5)]
        return Spec(fmt(shape), [randn(*shape)], twin, in_place=in_place, param_grads=False,
                    twin_params=lambda ps: [torch.zeros(c, device=ps[0].device),
                                            torch.ones(c, device=ps[0].device)])
    return factory


case("BatchNorm")(_batch_norm_factory(False))
case("BatchNorm", "in place")(_batch_norm_factory(True))


@case("Embed")
def _embed(mode: str) -> Spec:
    tokens, vocab, dim = pick(mode, (1280, 10000, 512), (640, 10000, 512), (6, 5, 3))
    idx = torch.randint(0, vocab, (tokens,), generator=_seeded()).float()
    return Spec(f"{tokens} ids, {vocab}x{dim}", [idx],
                lambda b, p: [F.embedding(b[0].long(), p[0]) + p[1]],
                f"embed_param {{ num_output: {dim} input_dim: {vocab} "
                "weight_filler { type: 'gaussian' } bias_filler { type: 'gaussian' } }")


@case("InnerProduct")
def _inner_product(mode: str) -> Spec:
    n, k, o = pick(mode, (64, 4096, 1000), (64, 4096, 1000), (3, 5, 4))
    return Spec(f"{n}x{k} -> {o}", [randn(n, k)], lambda b, p: [F.linear(b[0], p[0], p[1])],
                f"inner_product_param {{ num_output: {o} weight_filler {{ type: 'gaussian' "
                "std: 0.01 } bias_filler { type: 'gaussian' } }")


@case("LRN")
def _lrn(mode: str) -> Spec:
    shape = pick(mode, (16, 96, 55, 55), (4, 96, 55, 55), (2, 7, 3, 3))
    return Spec(fmt(shape) + " n=5", [randn(*shape)],
                lambda b, p: [F.local_response_norm(b[0], 5, 1e-4, 0.75, 1.0)],
                "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }")


@case("MVN")
def _mvn(mode: str) -> Spec:
    shape = feature_shape(mode)

    def twin(b, p):
        var, mean = torch.var_mean(b[0], dim=(2, 3), keepdim=True, correction=0)
        return [(b[0] - mean) / (var.sqrt() + 1e-9)]
    return Spec(fmt(shape), [randn(*shape)], twin)


# ---------------------------------------------------------------------------------- loss
def _scores_and_labels(mode: str) -> tuple[str, torch.Tensor, torch.Tensor]:
    n, c = loss_shape(mode)
    return fmt((n, c)), randn(n, c), labels(n, c)


@case("SoftmaxWithLoss")
def _softmax_loss(mode: str) -> Spec:
    size, x, y = _scores_and_labels(mode)
    return Spec(size, [x, y], lambda b, p: [F.cross_entropy(b[0], b[1].long())])


@case("MultinomialLogisticLoss")
def _mlogistic(mode: str) -> Spec:
    size, x, y = _scores_and_labels(mode)

    def twin(b, p):
        picked = b[0].gather(1, b[1].long().unsqueeze(1)).clamp_min(1e-20)
        return [-torch.log(picked).sum() / b[0].shape[0]]
    return Spec(size, [torch.softmax(x, 1), y], twin)


@case("EuclideanLoss")
def _euclidean(mode: str) -> Spec:
    n, c = loss_shape(mode)
    return Spec(fmt((n, c)), [randn(n, c), rand(n, c)],
                lambda b, p: [F.mse_loss(b[0], b[1], reduction="sum") / (2 * n)])


@case("HingeLoss")
def _hinge(mode: str) -> Spec:
    size, x, y = _scores_and_labels(mode)

    def twin(b, p):
        sign = torch.ones_like(b[0]).scatter_(1, b[1].long().unsqueeze(1), -1.0)
        return [F.relu(1 + sign * b[0]).sum() / b[0].shape[0]]
    return Spec(size, [x, y], twin)


@case("SigmoidCrossEntropyLoss")
def _sigmoid_ce(mode: str) -> Spec:
    n, c = loss_shape(mode)
    t = (rand(n, c) > 0.5).float()
    return Spec(fmt((n, c)), [randn(n, c), t],
                lambda b, p: [F.binary_cross_entropy_with_logits(b[0], b[1], reduction="sum")
                              / n])


@case("InfogainLoss")
def _infogain(mode: str) -> Spec:
    size, x, y = _scores_and_labels(mode)
    c = x.shape[1]
    h = torch.eye(c) + 0.01 * rand(c, c)

    def twin(b, p):
        prob = torch.softmax(b[0], 1).clamp_min(1e-20)
        return [-(b[2][b[1].long()] * torch.log(prob)).sum() / b[0].shape[0]]
    return Spec(size, [x, y, h], twin, grad=(True, False, False))


@case("ContrastiveLoss")
def _contrastive(mode: str) -> Spec:
    n, c = pick(mode, (64, 256), (64, 256), (4, 3))
    # distances around 0.5: inside the margin (1), far from 0 where Caffe's 1e-4 matters
    a, b_ = randn(n, c) * (0.4 / math.sqrt(c)), rand(n, c) * 0.01
    sim = (rand(n) > 0.5).float()

    def twin(b, p):
        d2 = ((b[0] - b[1]) ** 2).sum(1)
        far = F.relu(1.0 - d2.sqrt()) ** 2
        return [torch.where(b[2] != 0, d2, far).sum() / (2 * n)]
    return Spec(fmt((n, c)) + " pairs", [a, b_, sim], twin)


def _tied_scores(mode: str) -> tuple[str, torch.Tensor, torch.Tensor]:
    """Scores on a grid of 0.5 (as after a quantization or a ReLU), so that many items tie at
    their maximum, where Caffe's rules decide: the twins of Accuracy and ArgMax must follow
    them to pass the check (a plain ``argmax`` twin does not). Labels: an item's first maximum
    for every other item (a tie there is wrong for Caffe, right for ``argmax == label``),
    random for the rest."""
    n, c = loss_shape(mode)
    x = torch.round(randn(n, c) * 2) / 2
    y = labels(n, c)
    y[::2] = x[::2].argmax(1).float()
    return fmt((n, c)), x, y


@case("Accuracy")
def _accuracy(mode: str) -> Spec:
    size, x, y = _tied_scores(mode)

    def twin(b, p):  # correct when at most top_k (1) classes score >= the true one
        true = b[0].gather(1, b[1].long().unsqueeze(1))
        return [((b[0] >= true).sum(1) <= 1).to(b[0].dtype).mean()]
    return Spec(size + " tied scores", [x, y], twin,
                note="twin: Caffe's rule in torch (a tie with the true class counts as wrong); "
                "the plain (argmax == label).mean() gives another value on these scores")


# ---------------------------------------------------------------------------------- utility
@case("ArgMax")
def _argmax(mode: str) -> Spec:
    size, x, _ = _tied_scores(mode)
    last = x.shape[1] - 1  # of tied maxima Caffe reports the largest index

    def twin(b, p):
        return [(last - b[0].flip(1).argmax(1)).to(b[0].dtype).view(-1, 1, 1)]
    return Spec(size + " tied scores top_k=1", [x], twin,
                note="twin: argmax of the reversed scores (Caffe gives the largest index of "
                "tied maxima; a plain argmax gives the smallest and fails the check here)")


@case("BatchReindex")
def _batch_reindex(mode: str) -> Spec:
    shape = feature_shape(mode)
    idx = torch.randperm(shape[0], generator=_seeded()).float()
    return Spec(fmt(shape), [randn(*shape), idx],
                lambda b, p: [b[0].index_select(0, b[1].long())])


@case("Concat")
def _concat(mode: str) -> Spec:
    shape = feature_shape(mode)
    return Spec(f"2 x {fmt(shape)}", [randn(*shape), rand(*shape)],
                lambda b, p: [torch.cat(b, 1)])


@case("Crop")
def _crop(mode: str) -> Spec:
    n, c, h, w = feature_shape(mode)
    big = randn(n, c, h + 2, w + 2)
    return Spec(f"{fmt(big.shape)} -> {h}x{w}", [big, torch.zeros(n, c, h, w)],
                lambda b, p: [b[0][:, :, 1:1 + h, 1:1 + w]],
                "crop_param { axis: 2 offset: 1 }", grad=(True, False))


def _eltwise_factory(op: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    def factory(mode: str) -> Spec:
        shape = feature_shape(mode)
        a = randn(*shape)
        # b differs from a by at least 0.01 everywhere: no ties, where MAX's gradient rules
        # differ (Caffe routes to one bottom, torch.maximum splits)
        step = rand(*shape) + 0.01
        b = torch.where(torch.arange(a.numel()).view(shape) % 2 == 0, a + step, a - step)
        return Spec(f"2 x {fmt(shape)}", [a, b], lambda b, p: [fn(b[0], b[1])],
                    f"eltwise_param {{ operation: {op} }}")
    return factory


case("Eltwise", "SUM")(_eltwise_factory("SUM", torch.add))
case("Eltwise", "PROD")(_eltwise_factory("PROD", torch.mul))
case("Eltwise", "MAX")(_eltwise_factory("MAX", torch.maximum))


@case("Filter")
def _filter(mode: str) -> Spec:
    n, k = pick(mode, (64, 4096), (64, 4096), (4, 3))
    sel = (torch.arange(n) % 2).float()

    def twin(b, p):
        return [b[0].index_select(0, torch.nonzero(b[1]).view(-1))]
    return Spec(f"{n}x{k}, half kept", [randn(n, k), sel], twin)


@case("Flatten")
def _flatten(mode: str) -> Spec:
    shape = feature_shape(mode)
    return Spec(fmt(shape), [randn(*shape)], lambda b, p: [b[0].flatten(1)])


@case("Reshape")
def _reshape(mode: str) -> Spec:
    shape = feature_shape(mode)
    return Spec(fmt(shape), [randn(*shape)], lambda b, p: [b[0].reshape(shape[0], -1)],
                "reshape_param { shape { dim: 0 dim: -1 } }")


@case("Reduction", "SUM axis 1")
def _reduction(mode: str) -> Spec:
    shape = feature_shape(mode)
    return Spec(fmt(shape), [randn(*shape)],
                lambda b, p: [DenseGrad.apply(b[0]).flatten(1).sum(1)],
                "reduction_param { axis: 1 }",
                note="twin: its gradient made dense, as the layer must (autograd's is a "
                "stride-0 expand, which NumPy .diff writes would corrupt: every element of a "
                "reduced row is one memory location)")


@case("Silence")
def _silence(mode: str) -> Spec:
    shape = feature_shape(mode)
    return Spec(fmt(shape), [randn(*shape)], None,
                num_tops=0, manual_twin=lambda b: torch.zeros_like(b[0]),
                note="twin: the zero diff it writes")


def _slice_factory(views: bool):
    def factory(mode: str) -> Spec:
        shape = feature_shape(mode)
        sizes = [shape[1] // 2, shape[1] - shape[1] // 2]

        def twin(b, p):
            parts = torch.split(b[0], sizes, 1)
            return list(parts) if views else [t.clone() for t in parts]

        def after_setup(layer, dev):
            layer.tops_are_views = True

        note = ("ours with tops_are_views, as a net would set it when no layer writes into "
                "the tops; twin: torch.split's views" if views else
                "twin: torch.split's parts cloned, as Caffe's tops are memory of their own "
                "(an in-place consumer must not overwrite the bottom)")
        return Spec(f"{fmt(shape)} -> 2", [randn(*shape)], twin,
                    f"slice_param {{ axis: 1 slice_point: {sizes[0]} }}", num_tops=2,
                    after_setup=after_setup if views else None, note=note)
    return factory


case("Slice")(_slice_factory(False))
case("Slice", "views")(_slice_factory(True))


@case("Split")
def _split(mode: str) -> Spec:
    shape = feature_shape(mode)
    return Spec(f"{fmt(shape)} -> 2", [randn(*shape)], lambda b, p: [b[0], b[0]], num_tops=2)


@case("Tile")
def _tile(mode: str) -> Spec:
    shape = feature_shape(mode)
    return Spec(fmt(shape) + " x2 axis 1", [randn(*shape)],
                lambda b, p: [b[0].repeat(1, 2, 1, 1)], "tile_param { axis: 1 tiles: 2 }")


# ---------------------------------------------------------------------------------- vision
@case("Convolution", "3x3")
def _conv(mode: str) -> Spec:
    shape = feature_shape(mode)
    o = shape[1]
    return Spec(f"{fmt(shape)} {shape[1]}->{o} 3x3", [randn(*shape)],
                lambda b, p: [F.conv2d(b[0], p[0], p[1], 1, 1)],
                f"convolution_param {{ num_output: {o} kernel_size: 3 pad: 1 "
                "weight_filler { type: 'msra' } bias_filler { type: 'gaussian' } }")


@case("Deconvolution", "4x4/2")
def _deconv(mode: str) -> Spec:
    n, c, h, w = feature_shape(mode)
    shape = (n, c, h // 2, w // 2)
    return Spec(f"{fmt(shape)} {c}->{c} 4x4/2", [randn(*shape)],
                lambda b, p: [F.conv_transpose2d(b[0], p[0], p[1], 2, 1)],
                f"convolution_param {{ num_output: {c} kernel_size: 4 stride: 2 pad: 1 "
                "weight_filler { type: 'msra' } bias_filler { type: 'gaussian' } }")


@case("Im2col", "3x3")
def _im2col(mode: str) -> Spec:
    n, c, h, w = feature_shape(mode)
    shape = (n, c, h // 2, w // 2)
    return Spec(fmt(shape) + " 3x3", [randn(*shape)],
                lambda b, p: [F.unfold(b[0], 3, padding=1).view(n, c * 9, h // 2, w // 2)],
                "convolution_param { kernel_size: 3 pad: 1 }")


@case("Pooling", "MAX 3x3/2")
def _max_pool(mode: str) -> Spec:
    shape = pick(mode, (16, 64, 112, 112), (4, 64, 112, 112), (2, 3, 7, 7))
    return Spec(fmt(shape), [randn(*shape)],
                lambda b, p: [F.max_pool2d(b[0], 3, 2, ceil_mode=True)],
                "pooling_param { pool: MAX kernel_size: 3 stride: 2 }")


@case("Pooling", "AVE 7x7 global")
def _ave_pool(mode: str) -> Spec:
    shape = pick(mode, (64, 1024, 7, 7), (16, 1024, 7, 7), (2, 3, 7, 7))
    return Spec(fmt(shape), [randn(*shape)],
                lambda b, p: [F.avg_pool2d(b[0], 7, 1, ceil_mode=True)],
                "pooling_param { pool: AVE kernel_size: 7 stride: 1 }")


@case("SPP", "3 levels")
def _spp(mode: str) -> Spec:
    shape = pick(mode, (64, 256, 13, 13), (16, 256, 13, 13), (2, 3, 7, 7))
    side = shape[2]

    def twin(b, p):
        outs = []
        for level in range(3):
            bins = 2 ** level
            k = math.ceil(side / bins)
            pad = (k * bins - side + 1) // 2
            outs.append(F.max_pool2d(b[0], k, k, pad, ceil_mode=True).flatten(1))
        return [torch.cat(outs, 1)]
    return Spec(fmt(shape), [randn(*shape)], twin,
                "spp_param { pyramid_height: 3 pool: MAX }")


# ---------------------------------------------------------------------------------- recurrent
def _sequence(mode: str) -> tuple[int, int, int, int]:
    """T, N, K (input features), D (num_output)."""
    return pick(mode, (20, 32, 256, 256), (20, 32, 256, 256), (3, 2, 4, 3))


def _cont(t: int, n: int) -> torch.Tensor:
    cont = torch.ones(t, n)
    cont[0] = 0  # every stream starts a sequence: the carried state is not used
    return cont


def _gates_to_torch(w: torch.Tensor) -> torch.Tensor:
    """Caffe's gate order i, f, o, g -> PyTorch's i, f, g, o (along dim 0)."""
    i, f, o, g = w.chunk(4, 0)
    return torch.cat([i, f, g, o], 0)


def _flattened_like_nn(mode: str, input_size: int, hidden: int) -> Callable[[Tensors], None]:
    """What ``nn.RNNBase.flatten_parameters`` does to an nn.LSTM/nn.RNN moved to a GPU: the
    kernel's 4 weights become views of one buffer in cuDNN's layout, which torch then hands to
    cuDNN as it is (separate weights are compacted into a new buffer at every call)."""
    def ready(params: Tensors) -> None:
        w = params[0]
        if not cudnn_flattenable(w):
            return
        from torch.backends.cudnn import rnn
        with torch.cuda.device_of(w):
            torch._cudnn_rnn_flatten_weight(params[:4], 4, input_size, rnn.get_cudnn_mode(mode),
                                            hidden, 0, 1, False, False)
    return ready


_RECURRENT_PARAM = ("recurrent_param {{ num_output: {d} weight_filler {{ type: 'uniform' "
                    "min: -0.08 max: 0.08 }} bias_filler {{ type: 'uniform' min: -0.1 "
                    "max: 0.1 }} }}")


@case("LSTM")
def _lstm(mode: str) -> Spec:
    t, n, k, d = _sequence(mode)

    def twin_params(ps: Tensors) -> Tensors:
        w_x, b, w_h = ps
        return [_gates_to_torch(w_x), _gates_to_torch(w_h), _gates_to_torch(b),
                torch.zeros_like(b)]

    def twin(b, p):
        zeros = b[0].new_zeros(1, n, d)
        with kernel_precision(b[0]):
            return [torch.lstm(b[0], (zeros, zeros), p, True, 1, 0.0, True, False, False)[0]]
    return Spec(f"T={t} N={n} K={k} D={d}", [randn(t, n, k), _cont(t, n)], twin,
                _RECURRENT_PARAM.format(d=d), twin_params=twin_params,
                twin_ready=_flattened_like_nn("LSTM", k, d),
                note="twin: torch.lstm, nn.LSTM's kernel (on CPU oneDNN's fused LSTM; on CUDA "
                "the kernel set_precision allows: torch's native one under float32, cuDNN's, "
                "with its weights in one buffer as nn.LSTM keeps them, under tf32/bf16). Ours "
                "calls the same kernel when cont only restarts sequences at t = 0, as here; "
                "with a restart at t >= 1 it loops over the T steps")


@case("RNN")
def _rnn(mode: str) -> Spec:
    t, n, k, d = _sequence(mode)

    def twin_params(ps: Tensors) -> Tensors:
        w_x, b, w_h, w_o, b_o = ps
        return [w_x, w_h, b, torch.zeros_like(b), w_o, b_o]

    def twin(b, p):
        h0 = b[0].new_zeros(1, n, d)
        with kernel_precision(b[0]):
            hidden = torch.rnn_tanh(b[0], h0, p[:4], True, 1, 0.0, True, False, False)[0]
        return [torch.tanh(F.linear(hidden, p[4], p[5]))]
    return Spec(f"T={t} N={n} K={k} D={d}", [randn(t, n, k), _cont(t, n)], twin,
                _RECURRENT_PARAM.format(d=d), twin_params=twin_params,
                twin_ready=_flattened_like_nn("RNN_TANH", k, d),
                note="twin: torch.rnn_tanh (nn.RNN's kernel, on CUDA the one set_precision "
                "allows, as for LSTM) + linear + tanh")


@case("LSTMUnit")
def _lstm_unit(mode: str) -> Spec:
    n, d = pick(mode, (128, 512), (128, 512), (2, 3))

    def twin(b, p):
        c_prev, x, cont = b
        sig = torch.sigmoid(x[..., :3 * d])
        i, f, o = sig[..., :d], sig[..., d:2 * d] * cont.unsqueeze(-1), sig[..., 2 * d:]
        c = f * c_prev + i * torch.tanh(x[..., 3 * d:])
        return [c, o * torch.tanh(c)]
    return Spec(f"N={n} D={d}", [randn(1, n, d), randn(1, n, 4 * d), torch.ones(1, n)], twin,
                num_tops=2, grad=(True, True, False))


# ---------------------------------------------------------------------------------- data
@case("DummyData", "gaussian")
def _dummy(mode: str) -> Spec:
    shape = feature_shape(mode)
    dims = " ".join(f"dim: {d}" for d in shape)
    buf: Tensors = []

    def check(ours, tw):
        std = float(ours[0].std())
        return "" if ours[0].numel() < 1000 or 0.9 < std < 1.1 else f"std {std:.3f}"
    def after_setup(layer, dev):
        buf.append(torch.empty(shape, device=dev))
    return Spec(fmt(shape), [], lambda b, p: [buf[0].normal_(0.0, 1.0)],
                f"dummy_data_param {{ shape {{ {dims} }} data_filler {{ type: 'gaussian' }} }}",
                check=check, after_setup=after_setup, note="twin: normal_ into a buffer")


@case("MemoryData")
def _memory_data(mode: str) -> Spec:
    n, c, h, w = pick(mode, (16, 3, 224, 224), (4, 3, 224, 224), (2, 3, 4, 4))
    data, lab = randn(4 * n, c, h, w), labels(4 * n, 10)
    state: dict = {"pos": 0}

    def twin(b, p):
        # the arrays live on the host (as the layer's, handed over by set_input_arrays): each
        # batch is sliced there and copied to the bench device, as the layer (and Caffe) do
        start = state["pos"]
        state["pos"] = (start + n) % (4 * n)
        dev = state["device"]
        return [data[start:start + n].to(dev), lab[start:start + n].view(n, 1, 1, 1).to(dev)]

    def after_setup(layer, dev):
        layer.reset(data.numpy(), lab.numpy(), 4 * n)
        state["device"] = dev
    return Spec(f"{n}x{c}x{h}x{w}", [], twin,
                f"memory_data_param {{ batch_size: {n} channels: {c} height: {h} "
                f"width: {w} }}", num_tops=2, after_setup=after_setup,
                note="both sides slice the host arrays and copy the batch to the device")
