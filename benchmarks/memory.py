"""Memory measurement: peak bytes of live torch tensor storage, and what a caffe net holds.

:class:`LiveBytes` is a TorchDispatchMode that sees every aten op (forward, autograd's backward,
optimizer steps), registers each new output storage with its size, and drops it from the count
when the storage is freed (a ``weakref.finalize`` on the storage object, which torch keeps
alive as long as the C++ storage lives). So ``peak`` is the high-water mark of bytes held by
live tensors created inside the mode (outputs that view or update an input's storage are
not new memory): parameters, gradients/diffs, optimizer history,
activations and temporaries, but not Python objects, allocator caches or libraries' private
workspaces (oneDNN scratch). It is exact, independent of other processes, and the same method
for both sides; it works for CPU and CUDA tensors alike (on CUDA the suite uses
``torch.cuda.max_memory_allocated`` instead, which also counts cuDNN workspaces).

:func:`held_by_class` splits what a caffe net (and its solver) holds after a step into blob
classes, each storage counted once.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    """Count live tensor-storage bytes created while the mode is active; ``peak`` is the
    high-water mark since the last ``reset_peak()``."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.sizes.pop(key, 0)

    def reset_peak(self) -> None:
        self.peak = self.current

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = None
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            st = t.untyped_storage()
            key = st._cdata
            size = st.nbytes()
            if key in self.sizes or not size:
                continue
            if inputs is None:  # views and in-place results of the inputs are not new memory
                inputs = {a.untyped_storage()._cdata for a in tree_flatten((args, kwargs))[0]
                          if isinstance(a, torch.Tensor)}
            if key in inputs:
                continue
            self.sizes[key] = size
            self.current += size
            weakref.finalize(st, self._free, key)
            if self.current > self.peak:
                self.peak = self.current
        return out


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    st = t.untyped_storage()
    return st._cdata, st.nbytes()


def _tensors_in(value, depth: int = 0):
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < 2 and isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors_in(v, depth + 1)
    elif depth < 2 and isinstance(value, dict):
        for v in value.values():
            yield from _tensors_in(v, depth + 1)


def held_by_class(net, solver=None) -> OrderedDict[str, dict]:
    """Bytes and storage counts a caffe ``net`` holds, by class: input blobs, intermediate
    blob data, intermediate blob diffs, parameters, parameter diffs, solver history, and
    tensors kept by layers between passes (masks, saved inputs, statistics). A storage is
    counted in the first class that reaches it."""
    seen: set[int] = set()
    classes: OrderedDict[str, dict] = OrderedDict()

    def add(cls: str, t: torch.Tensor | None) -> None:
        entry = classes.setdefault(cls, {"bytes": 0, "storages": 0})
        if t is None or t.numel() == 0:
            return
        key, size = _storage_key(t)
        if key in seen:
            return
        seen.add(key)
        entry["bytes"] += size
        entry["storages"] += 1

    inputs = set(net.inputs)
    param_ids = {id(b) for blobs in net.params.values() for b in blobs}
    for name, blob in net.blobs.items():
        add("input data" if name in inputs else "blob data", blob.tensor)
    for name, blob in net.blobs.items():
        if name not in inputs:
            add("blob diff", blob.diff_tensor if blob.has_diff else None)
    for name, blob in net.blobs.items():
        if name in inputs:
            add("input diff", blob.diff_tensor if blob.has_diff else None)
    for blobs in net.params.values():
        for b in blobs:
            add("param data", b.tensor)
    for blobs in net.params.values():
        for b in blobs:
            add("param diff", b.diff_tensor if b.has_diff else None)
    if solver is not None:
        for h in getattr(solver, "history", []):
            add("solver history", h)
    for layer in net.layers:
        for attr, value in vars(layer).items():
            if attr in ("blobs",) or id(value) in param_ids:
                continue
            for t in _tensors_in(value):
                add(f"layer buffers ({layer.type})", t)
    return classes


def in_place_report(net) -> list[dict]:
    """Layers whose prototxt asks for in-place computation (top == bottom) but whose forward
    replaced the blob's storage, so each pass allocates a new full-size tensor for them
    (``kept_for_backward``: the layer keeps the old storage, its input, for its backward, so
    the pass holds no more than writing in place plus a saved copy would).
    Runs one forward with callbacks attached: give it a net you will throw away."""
    moved: list[dict] = []
    ptrs: dict[int, int] = {}
    names = list(net.layer_dict)
    tops, bottoms = net.top_names, net.bottom_names
    in_place = {i for i, n in enumerate(names)
                if tops[n] and bottoms[n] and tops[n][0] == bottoms[n][0]}

    def storage(i: int) -> int:
        return net.blobs[tops[names[i]][0]].tensor.untyped_storage().data_ptr()

    def before(i: int) -> None:
        if i in in_place:
            ptrs[i] = storage(i)

    def after(i: int) -> None:
        if i in in_place and storage(i) != ptrs[i]:
            kept = any(t.untyped_storage().data_ptr() == ptrs[i]
                       for t in _tensors_in(list(vars(net.layers[i]).values())))
            moved.append({"layer": names[i], "type": net.layers[i].type,
                          "bytes": net.blobs[tops[names[i]][0]].tensor.nbytes,
                          "kept_for_backward": kept})

    net.before_forward(before)
    net.after_forward(after)
    net.forward()
    return moved
