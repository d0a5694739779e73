"""Layer: the base class of every layer, built-in or written in Python.

Lifecycle, as in Caffe: the net checks the blob counts a class declares, then calls
``setup(bottom, top)`` once (read parameters, create ``self.blobs``), ``reshape(bottom, top)``
(shape the tops) at setup and again before every forward, ``forward(bottom, top)``, and
``backward(top, propagate_down, bottom)``. ``bottom`` and ``top`` are lists of
:class:`caffe.Blob` because a layer may have several inputs (a loss takes a prediction and a
label) and several outputs.

A layer that defines no ``backward`` but computes its tops from ``blob.tensor`` with torch ops
gets its backward from autograd: bottom diffs are written and ``self.blobs`` diffs accumulated,
honouring ``propagate_down`` and loss weights.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Sequence
from typing import ClassVar

import torch

from caffe.blob import Blob, BlobVec, TorchBlobView
from caffe.errors import BlobCountError, LayerSetupError, PythonLayerError
from caffe.model_io import blobproto_to_array, fill_tensor
from caffe.proto import caffe_pb2


class _Pass:
    """What the net allows during the pass (forward or backward) it is running: layers
    ``fold_from`` to ``fold_to`` may fold into one another (a BatchNorm applying the in-place
    Scale after it): the range is empty outside uninspected passes (no callbacks, debug_info or
    NaN check), where every intermediate value must be observable."""

    fold_from = 1
    fold_to = 0


PASS = _Pass()


class Phase(enum.IntEnum):
    """TRAIN or TEST; ``str(caffe.TRAIN) == 'TRAIN'`` and ``caffe.TRAIN == 0``."""

    TRAIN = 0
    TEST = 1

    def __str__(self) -> str:
        return self.name


TRAIN = Phase.TRAIN
TEST = Phase.TEST


class Layer:
    """Base class of all layers. Subclasses declare their blob counts as class attributes and
    override ``setup``, ``reshape``, ``forward`` and (optionally) ``backward``."""

    #: Caffe type name; set by ``@register_layer``.
    type_name: ClassVar[str] = "Python"

    # Blob-count declarations (Caffe's ExactNumBottomBlobs() & co.), checked before setup.
    exact_num_bottom_blobs: ClassVar[int | None] = None
    min_bottom_blobs: ClassVar[int | None] = None
    max_bottom_blobs: ClassVar[int | None] = None
    exact_num_top_blobs: ClassVar[int | None] = None
    min_top_blobs: ClassVar[int | None] = None
    max_top_blobs: ClassVar[int | None] = None
    equal_num_bottom_top_blobs: ClassVar[bool] = False
    #: create anonymous tops up to the minimum/exact count when the prototxt names fewer
    auto_top_blobs: ClassVar[bool] = False
    #: loss layers weigh their first top by 1 unless the prototxt says otherwise
    is_loss: ClassVar[bool] = False
    #: False for layers without a backward in Caffe (Accuracy, ArgMax, data layers...)
    has_backward: ClassVar[bool] = True
    #: bottoms that force_backward must not reach (labels, indices): Caffe's AllowForceBackward;
    #: negative indices count from the last bottom
    no_force_backward_bottoms: ClassVar[tuple[int, ...]] = ()
    #: opt-in for Python layers: ``bottom[i].data`` / ``.diff`` (and the tops') are torch tensors
    #: on the compute device instead of NumPy arrays, so GPU mode needs no host copies
    torch_blobs: ClassVar[bool] = False
    #: whether a pass through this layer can be recorded as a CUDA graph (``Net.use_cuda_graph``):
    #: False for layers that read files or host memory, wait for the device, or whose top
    #: shapes depend on the data. Layers written outside neocaffe are never graphed
    #: (``may_be_graphed``).
    graph_safe: ClassVar[bool] = True
    #: whether a top may be the bottom at the same index (in-place computation); the net
    #: refuses in-place wiring for built-in layers that do not allow it. Layers written
    #: outside neocaffe (Python layers, user-registered types) are not checked: as in Caffe,
    #: their author decides.
    allows_in_place: ClassVar[bool] = False
    #: whether ``reshape`` is a function of the bottom, top and parameter blob shapes alone
    #: (and of settings fixed at setup): the net then skips it while none of those shapes
    #: changed since its last call. False for layers whose top shapes follow the data (Filter)
    #: or that read files or host memory; layers written outside neocaffe are always
    #: reshaped (``may_skip_reshape``), as Caffe reshapes every layer before every forward.
    reshape_by_shapes: ClassVar[bool] = True
    #: whether ``forward`` hands every top that is not one of its bottoms a new tensor
    #: (``top.tensor = ...``) without reading the old one. On the CPU the net then lets go of
    #: the old memory just before, so the allocator hands the layer that same, cache-warm
    #: memory back, as it would to a plain PyTorch program, instead of a second buffer
    #: (``vacates``)
    replaces_tops: ClassVar[bool] = False
    #: the same for ``backward`` and the diffs of the bottoms it propagates to
    replaces_bottom_diffs: ClassVar[bool] = False
    #: whether ``backward``, as in Caffe, may write the diff of a bottom whose propagate_down
    #: is False (Scale keeps a scratch product there; RNN, LSTM and LSTMUnit compute every
    #: input diff at once). Kept for Caffe's numbers (a Split below such a bottom sums that diff
    #: like any other, as in Caffe); ``check_layer`` reports it as a note, not a failure
    writes_unrequested_diffs: ClassVar[bool] = False

    def __init__(self, layer_param: caffe_pb2.LayerParameter | None = None,
                 phase: Phase | None = None) -> None:
        if layer_param is None:
            layer_param = caffe_pb2.LayerParameter(name=type(self).__name__)
        self.layer_param = layer_param
        self.phase = Phase(phase if phase is not None else layer_param.phase)
        self.param_str = layer_param.python_param.param_str
        self.blobs = BlobVec()
        #: settings from unknown ``*_param`` blocks (fork nets loaded with strict=False)
        self.extra_params: dict = {}
        # The engine's own state has private names: a Python layer may use any public name
        # for its own (pycaffe's Layer has no attributes but blobs, phase, param_str, type;
        # real layers set self.loss, self.name, self.param_propagate_down, ...)
        self._loss_weights: list[float] = []
        self._param_propagate_down: list[bool] = []
        #: False when the net will never run this layer's backward (TEST nets, layers below
        #: no loss): a layer may then skip keeping what only its backward needs
        self._need_backward = True
        self._graph = None
        self._record_bottoms: list[bool] | None = None

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        """The layer's name in the prototxt (a Python layer may set its own ``self.name``;
        the net keeps using the prototxt's)."""
        return self.__dict__.get("_own_name", self.layer_param.name)

    @name.setter
    def name(self, value) -> None:
        self.__dict__["_own_name"] = value

    @property
    def type(self) -> str:
        return self.type_name

    @property
    def param_str_(self) -> str:  # spelling used by the py-faster-rcnn fork
        return self.param_str

    @param_str_.setter
    def param_str_(self, value: str) -> None:
        self.param_str = value

    def _loss(self, top_index: int) -> float:
        return self._loss_weights[top_index] if top_index < len(self._loss_weights) else 0.0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.name}' ({self.type})>"

    # ------------------------------------------------------------------ user hooks
    def setup(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Read parameters and create ``self.blobs``. Runs once."""

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Shape the tops (and internal buffers) from the bottoms. Runs before every forward."""

    def batch_axis_of(self, i: int) -> int | None:
        """The axis of bottom ``i`` that is the batch: 0; 1 for sequences stored time-major
        (``T x N x ...``); None for an operand whose shape does not follow the batch
        (InfogainLoss's matrix). ``check_layer`` doubles it to test that reshape follows the
        batch size."""
        return 0

    def forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Compute the tops' data from the bottoms' data."""
        raise NotImplementedError(f"{self!r} defines no forward()")

    def backward(self, top: Sequence[Blob], propagate_down: Sequence[bool],
                 bottom: Sequence[Blob]) -> None:
        """Compute bottom diffs (overwrite) and param diffs (accumulate) from top diffs.

        This default uses autograd over the torch ops that ``forward`` ran on ``blob.tensor``."""
        graph = self._graph
        if graph is None:
            raise PythonLayerError(
                f"Layer '{self.name}' ({self.type}) defines no backward(), and its last forward "
                "recorded no autograd graph: compute the tops from blob.tensor with torch ops "
                "(not from blob.data with NumPy), or write a backward(top, propagate_down, "
                "bottom). (A training step releases the graph after its backward: run forward "
                "again, or set solver.keep_blob_diffs = True.)"
            )
        outputs, inputs = graph
        wanted = [(blob, leaf, is_param) for blob, leaf, is_param, i in inputs
                  if is_param or propagate_down[i]]
        if not wanted or not outputs:
            return
        grads = torch.autograd.grad(
            [t for _, t in outputs], [leaf for _, leaf, _ in wanted],
            grad_outputs=[blob.diff_tensor.to(t.dtype) for blob, t in outputs],
            allow_unused=True, retain_graph=True,
        )
        for (blob, leaf, is_param), g in zip(wanted, grads):
            if g is None:
                g = torch.zeros_like(leaf)
            if is_param:
                blob.diff_tensor.add_(g)
            else:
                blob.diff_tensor = g.detach()

    # ------------------------------------------------------------------ resume state
    def state_dict(self) -> dict:
        """The layer's non-parameter state that an exact resume needs (a data layer's position
        and shuffle order, a private random generator's state), saved with solver snapshots.
        JSON-able: dicts with string keys, lists, strings, ints, floats, booleans, None.
        Parameters are not part of it (they are in the weights). Default: no state."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned. ``state`` comes from a file: check its types
        and ranges, raising ValueError or TypeError (the solver names the file)."""
        if state:
            raise ValueError(f"Layer '{self.name}' ({self.type}) keeps no state to restore, "
                             f"but the saved state has entries {sorted(state)[:5]}")

    # ------------------------------------------------------------------ machinery
    @classmethod
    def io_blobs(cls, blobs: Sequence[Blob]) -> list:
        """The bottom/top list as this layer sees it (torch views when ``torch_blobs``)."""
        if cls.torch_blobs:
            return [TorchBlobView(getattr(b, "blob", b)) for b in blobs]
        return [getattr(b, "blob", b) for b in blobs]

    @classmethod
    def refuses_force_backward(cls, num_bottom: int) -> frozenset[int]:
        """The indices, among ``num_bottom`` bottoms, that ``no_force_backward_bottoms``
        names (labels, indices: no gradient reaches them)."""
        return frozenset(k % num_bottom for k in cls.no_force_backward_bottoms) \
            if num_bottom else frozenset()

    @classmethod
    def built_in(cls) -> bool:
        """Whether the class was written inside neocaffe, so that the net may rely on what it
        declares about itself (in place, reshape, memory, graphs); Python layers and types
        registered by the user are run the way Caffe runs every layer."""
        return cls.__module__.startswith("caffe.")

    @classmethod
    def may_compute_in_place(cls) -> bool:
        """Whether a top may be the bottom at the same index: when the class allows it, or when
        it was written outside neocaffe (a Python layer, a fork type registered by the user),
        whose author decides, as in Caffe."""
        return cls.allows_in_place or not cls.built_in()

    @classmethod
    def may_skip_reshape(cls) -> bool:
        """Whether the net may skip ``reshape`` while the blob shapes stay the same: when the
        class declares ``reshape_by_shapes`` and was written inside neocaffe."""
        return cls.reshape_by_shapes and cls.built_in()

    @classmethod
    def vacates(cls) -> tuple[bool, bool]:
        """(tops, bottom diffs): whether the net may let go of their memory before forward
        and backward, as the class declares (``replaces_tops``, ``replaces_bottom_diffs``);
        never for classes written outside neocaffe."""
        own = cls.built_in()
        return own and cls.replaces_tops, own and cls.replaces_bottom_diffs

    @classmethod
    def may_be_graphed(cls) -> bool:
        """Whether the class declares itself ``graph_safe``; Python layers and other classes
        written outside neocaffe may run host code, so they are not."""
        return cls.graph_safe and cls.built_in()

    @classmethod
    def uses_autograd(cls) -> bool:
        """True when the class relies on the autograd backward (defines no backward)."""
        return cls.has_backward and cls.backward is Layer.backward

    def _check_blob_counts(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        lp = self.layer_param

        def fail(kind: str, rule: str, names: Sequence[str]) -> None:
            raise BlobCountError(
                f"Layer '{self.name}' ({self.type}) takes {rule} {kind} blobs, got {len(names)}: "
                f"{list(names)}"
            )

        nb, nt = len(bottom), len(top)
        cls = type(self)
        if cls.exact_num_bottom_blobs is not None and nb != cls.exact_num_bottom_blobs:
            fail("bottom", str(cls.exact_num_bottom_blobs), lp.bottom)
        if cls.min_bottom_blobs is not None and nb < cls.min_bottom_blobs:
            fail("bottom", f"at least {cls.min_bottom_blobs}", lp.bottom)
        if cls.max_bottom_blobs is not None and nb > cls.max_bottom_blobs:
            fail("bottom", f"at most {cls.max_bottom_blobs}", lp.bottom)
        if cls.exact_num_top_blobs is not None and nt != cls.exact_num_top_blobs:
            fail("top", str(cls.exact_num_top_blobs), lp.top)
        if cls.min_top_blobs is not None and nt < cls.min_top_blobs:
            fail("top", f"at least {cls.min_top_blobs}", lp.top)
        if cls.max_top_blobs is not None and nt > cls.max_top_blobs:
            fail("top", f"at most {cls.max_top_blobs}", lp.top)
        if cls.equal_num_bottom_top_blobs and nb != nt:
            raise BlobCountError(
                f"Layer '{self.name}' ({self.type}) takes as many top blobs as bottom blobs; "
                f"got {nb} bottoms {list(lp.bottom)} and {nt} tops {list(lp.top)}"
            )

    def SetUp(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Check blob counts, run setup and reshape, and apply loss weights (Caffe's
        Layer::SetUp)."""
        self._check_blob_counts(bottom, top)
        if not self.may_compute_in_place():
            for j, (b, t) in enumerate(zip(bottom, top)):
                if getattr(b, "blob", b) is getattr(t, "blob", t):
                    raise LayerSetupError(
                        f"Layer '{self.name}' ({self.type}) does not allow in-place computation "
                        f"(top {j} is bottom {j}): give the top a name different from its bottom")
        given = self._blobs_in_definition()
        if given and not self.built_in():  # Caffe's Layer constructor fills blobs_ first
            for arr in given:
                self.blobs.add_blob(*arr.shape).data[...] = arr
        self.setup(bottom, top)
        if given and self.built_in():  # and its layers then skip their fillers
            self._take_blobs(given)
        self.reshape(bottom, top)
        weights = list(self.layer_param.loss_weight)
        if not weights and self.is_loss:
            weights = [1.0]
        if len(weights) > len(top):
            raise LayerSetupError(
                f"Layer '{self.name}' ({self.type}) has {len(weights)} loss_weight values but "
                f"only {len(top)} tops; give at most one loss_weight per top"
            )
        self._loss_weights = weights + [0.0] * (len(top) - len(weights))
        for w, t in zip(self._loss_weights, top):
            if w:
                t.diff_tensor.fill_(w)
        if len(self._param_propagate_down) != len(self.blobs):
            self._param_propagate_down = [True] * len(self.blobs)

    def _blobs_in_definition(self) -> list:
        """The parameter values the layer's definition carries (``blobs`` in its
        LayerParameter), as arrays."""
        if not len(self.layer_param.blobs):
            return []

        return [blobproto_to_array(bp, f"layer '{self.name}' blob {j} in the net definition")
                for j, bp in enumerate(self.layer_param.blobs)]

    def _take_blobs(self, given: list) -> None:
        """Replace the filled parameters by the ones the definition carries."""
        if len(given) != len(self.blobs):
            raise LayerSetupError(
                f"Layer '{self.name}' ({self.type}) carries {len(given)} parameter blobs in its "
                f"definition but has {len(self.blobs)}; give all of them or none")
        for j, (blob, arr) in enumerate(zip(self.blobs, given)):
            if arr.size != blob.count:
                raise LayerSetupError(
                    f"Layer '{self.name}' ({self.type}): blob {j} in its definition has shape "
                    f"{arr.shape} ({arr.size} values), but the layer's parameter {j} has shape "
                    f"{blob.shape}")
            fill_tensor(blob.tensor, arr)

    def Reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        self.reshape(bottom, top)

    def Forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> float:
        """reshape + forward; returns the weighted loss of this layer's tops."""
        self.reshape(bottom, top)
        self._forward(bottom, top)
        loss = 0.0
        for w, t in zip(self._loss_weights, top):
            if w:
                loss += w * float(t.tensor.sum())
        return loss

    def Backward(self, top: Sequence[Blob], propagate_down: Sequence[bool],
                 bottom: Sequence[Blob]) -> None:
        self.backward(top, list(propagate_down), bottom)

    def _forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Forward as the net calls it: recording an autograd graph when the class relies on
        the autograd backward and the net will ask for a backward."""
        if self._record_bottoms is None:
            self.forward(bottom, top)
        else:
            self._forward_recording(bottom, top)

    def _forward_recording(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Forward with the needed bottoms and the params swapped for autograd leaves, keeping
        the graph from those leaves to the tops for ``backward``."""
        raw_bottom = [getattr(b, "blob", b) for b in bottom]
        raw_top = [getattr(t, "blob", t) for t in top]
        inputs = [(b, False, i) for i, (b, need) in enumerate(zip(raw_bottom, self._record_bottoms))
                  if need]
        inputs += [(p, True, j) for j, (p, need)
                   in enumerate(zip(self.blobs, self._param_propagate_down)) if need]
        leaves = []
        swapped = []
        in_place = False
        for blob, is_param, index in inputs:
            orig = blob.tensor
            leaf = orig.detach().requires_grad_(True)
            if not is_param and any(blob is t for t in raw_top):
                # in place: the top replaces this blob's data, so the forward works on a
                # differentiable copy of the leaf and nothing is restored afterwards
                with torch.enable_grad():
                    blob._t = leaf.clone()
                in_place = True
            else:
                blob._t = leaf
                swapped.append((blob, orig))
            leaves.append((blob, leaf, is_param, index))
        try:
            with torch.enable_grad(), _saved_as_copies(in_place):
                self.forward(bottom, top)
        finally:
            for blob, orig in swapped:
                blob._t = orig
        outputs = []
        for t in raw_top:
            tt = t._t
            if tt.requires_grad:
                outputs.append((t, tt))
                t._t = tt.detach()
        self._graph = (outputs, leaves) if outputs else None


def _saved_as_copies(enabled: bool):
    """While ``enabled``, autograd saves copies of the tensors its backward needs: a layer
    computing in place (``top[0].tensor[...] = top[0].tensor ** 3``) overwrites the very tensor
    it read, which autograd would otherwise refuse to differentiate."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autograd.graph.saved_tensors_hooks(torch.clone, _same)


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


class ReshapeGate:
    """Caffe's reshape before a layer's forward, skipped when the layer's reshape depends on
    blob shapes alone (``Layer.may_skip_reshape``) and none of its bottoms, tops and parameters
    changed shape since its last reshape: a reshape costs several microseconds of Python, which
    launch-bound GPU passes would pay per layer per pass. Other layers reshape every time."""

    __slots__ = ("blobs", "key")

    def __init__(self, layer: Layer, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        self.blobs: tuple[Blob, ...] | None = (
            tuple(bottom) + tuple(top) + tuple(layer.blobs) if layer.may_skip_reshape()
            else None)
        self.key: tuple | None = None  # the shapes after the last reshape

    def reshape(self, layer: Layer, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        blobs = self.blobs
        if blobs is None:
            layer.reshape(bottom, top)
            return
        if tuple([b._t.shape for b in blobs]) != self.key:
            layer.reshape(bottom, top)
            self.key = tuple([b._t.shape for b in blobs])
