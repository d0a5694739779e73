"""CUDA graphs for fixed-shape nets: ``net.use_cuda_graph()``.

A net's layers launch hundreds of small kernels per pass from Python; on a fast GPU the launch
overhead, not the arithmetic, sets the pace of small nets. A CUDA graph records the kernels of
one pass once and replays them with a single launch.

The net is split into an *eager prefix* (data layers, layers whose output shape depends on the
data, Python layers: anything whose class sets ``graph_safe = False`` or was written outside
neocaffe, ``Layer.may_be_graphed``; none of them may need a backward) and the *graphed body*,
every later layer. Each call runs the prefix as usual, then
replays the body: ``forward`` replays a forward graph, ``forward_backward`` (what
``solver.step`` calls) a forward+backward graph.

Life of a graph, per kind of call:

1. The first call runs eagerly (it sets the shapes and lets cuDNN pick its algorithms).
2. The second call captures: the body is run twice on a side stream to warm up, then once
   under capture. Every parameter and layer blob (data and diff), and the random generators,
   are saved first and restored afterwards, so capturing leaves no trace on training.
3. The same (second) call then runs the body both ways from the same state, replayed and eager,
   and compares the loss, every parameter diff and every output. If they differ beyond float32
   noise (rtol 1e-4) the graph is dropped with a warning naming the worst blob and the net stays
   eager; the eager result is what the call returns either way.
4. Later calls replay. Before a replay, every tensor the graph reads from outside (the body's
   input blobs, parameters, parameter diffs, seeded top diffs) is checked by identity: a blob
   whose tensor was replaced (``blob.tensor = x``, a data layer handing over a new batch) is
   copied into the captured tensor. After it, the blobs are bound to the tensors the graph wrote.
   A changed input shape drops the graph (the next two calls capture again).

Not graphed: calls with callbacks, ``debug_info`` or the NaN check, partial passes
(``start``/``end``), CPU mode. ``caffe train --cuda-graph`` turns it on for the train net.
"""

from __future__ import annotations

import torch

from caffe._common import LOG, STATE
from caffe.blob import _HOST_HEAD, RELEASED, Blob

#: relative tolerance of the replay-vs-eager check (float32 noise of reordered reductions)
RTOL = 1e-4


class _Graph:
    """One captured body pass (``kind`` "forward" or "forward_backward")."""

    def __init__(self, net, start: int, kind: str, release_diffs: bool = False) -> None:
        self.net, self.start, self.kind = net, start, kind
        self.release_diffs = release_diffs
        layers = range(start, len(net._layers))
        self.blobs: list[Blob] = []
        seen: set[int] = set()
        for li in layers:
            for b in list(net._bottom_vecs[li]) + list(net._top_vecs[li]) + list(
                    net._layers[li].blobs):
                if id(b) not in seen:
                    seen.add(id(b))
                    self.blobs.append(b)
        # tensors the body reads from outside: bottoms not produced earlier in the body, all
        # layer blobs (params, statistics); for backward also the diffs it does not produce
        # (the tops of bottom-less layers such as Input are filled by the user: inputs too)
        produced: set[int] = set()
        data_in: list[Blob] = []
        for li in layers:
            sources = net._bottom_vecs[li] or net._top_vecs[li]
            for b in sources:
                if id(b) not in produced and all(b is not x for x in data_in):
                    data_in.append(b)
            produced.update(id(t) for t in net._top_vecs[li])
        params = [p for li in layers for p in net._layers[li].blobs]
        self.data_in = data_in + params
        self.diff_in: list[Blob] = []
        if kind == "forward_backward":
            written: set[int] = set()
            for li in reversed(layers):
                for t in net._top_vecs[li]:
                    if id(t) not in written and all(t is not x for x in self.diff_in):
                        self.diff_in.append(t)
                written.update(id(b) for b in net._bottom_vecs[li])
            self.diff_in += params
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: list[tuple[Blob, bool, torch.Tensor]] = []
        self.bindings: list[tuple[Blob, torch.Tensor, torch.Tensor | None]] = []

    # ------------------------------------------------------------------ running the body
    def run_eager(self) -> None:
        net = self.net
        net._forward(self.start, compute_loss=False)
        if self.kind == "forward_backward":
            RELEASED.active = self.release_diffs  # layers may read released diffs silently
            try:
                net._backward(None, self.start, release_diffs=self.release_diffs)
            finally:
                RELEASED.active = False

    def capture(self) -> None:
        ins = [(b, False, b.tensor) for b in self.data_in]
        ins += [(b, True, b._g) for b in self.diff_in if b._g is not None]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.run_eager()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.run_eager()
        self.graph = graph
        self.inputs = ins
        self.bindings = [(b, b._t, b._g) for b in self.blobs]

    def replay(self) -> bool:
        """Replay; False (nothing run) when an input changed shape."""
        for blob in self.blobs:  # NumPy writes not yet copied to the device (host mirrors)
            if blob._hd_state == _HOST_HEAD:
                blob._device_data()
            if blob._hg_state == _HOST_HEAD:
                blob._device_diff()
        for blob, is_diff, t in self.inputs:
            cur = blob.diff_tensor if is_diff else blob.tensor  # flushes NumPy writes
            if cur is not t:
                if cur.shape != t.shape:
                    return False
                t.copy_(cur)
                if is_diff:
                    blob.diff_tensor = t
                else:
                    blob.tensor = t
        self.graph.replay()
        for blob, data, diff in self.bindings:
            blob.tensor = data
            if diff is not None:
                blob.diff_tensor = diff
            elif self.release_diffs:
                blob.release_diff()
        return True


class _State:
    """Saved data and diff of every layer blob and the random generators."""

    def __init__(self, graph: _Graph) -> None:
        layers = graph.net._layers[graph.start:]
        self.blobs = [(p, p.tensor.clone(), p._g.clone() if p._g is not None else None)
                      for layer in layers for p in layer.blobs]
        self.cuda_rng = torch.cuda.get_rng_state()
        self.cpu_rng = STATE.generator.get_state()

    def restore(self) -> None:
        for p, data, diff in self.blobs:
            p.tensor.copy_(data)
            if diff is not None:
                p.diff_tensor.copy_(diff)
            elif p._g is not None:
                p._g.zero_()
        torch.cuda.set_rng_state(self.cuda_rng)
        STATE.generator.set_state(self.cpu_rng)


def _outputs(graph: _Graph) -> dict[str, torch.Tensor]:
    """What a call produces: output blobs' data, every parameter diff (forward+backward)."""
    net = graph.net
    out = {name: net.blobs[name].tensor.clone() for name in net.outputs}
    if graph.kind == "forward_backward":
        for li in range(graph.start, len(net._layers)):
            for j, p in enumerate(net._layers[li].blobs):
                if p._g is not None:
                    out[f"{net._layer_names[li]}[{j}] diff"] = p._g.clone()
    return out


def _worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[str, float]:
    worst, name = 0.0, ""
    for k, ref in b.items():
        ref = ref.double()
        err = float((a[k].double() - ref).abs().max()) if ref.numel() else 0.0
        scale = RTOL * max(1.0, float(ref.abs().max()) if ref.numel() else 0.0)
        if err / scale > worst:
            worst, name = err / scale, k
    return name, worst


class GraphRunner:
    """Per-net state of ``use_cuda_graph``: one graph per kind of call."""

    def __init__(self, net) -> None:
        self.net = net
        self.calls: dict[str, int] = {}
        self.graphs: dict[str, _Graph] = {}
        self.disabled: dict[str, str] = {}
        self.start = self._body_start()

    def _body_start(self) -> int | None:
        net = self.net
        layers = net._layers
        start = len(layers)
        while start > 0 and layers[start - 1].may_be_graphed():
            start -= 1
        if start == len(layers):
            why = "its last layer cannot be graphed"
        elif any(net._layer_need_backward[li] for li in range(start)):
            why = (f"layer '{net._layer_names[start - 1]}' ({layers[start - 1].type}) cannot be "
                   "graphed, and it or a layer before it needs a backward")
        else:
            return start
        LOG.warning("use_cuda_graph: net %s stays eager: %s", net.name, why)
        return None

    def usable(self) -> bool:
        net = self.net
        return (self.start is not None and STATE.device.type == "cuda"
                and not (net._before_forward or net._after_forward or net._before_backward
                         or net._after_backward or net.debug_info or net.check_nan))

    def run(self, kind: str, release_diffs: bool = False) -> torch.Tensor | float:
        """One full call (``forward``, or ``forward_backward`` releasing intermediate diffs or
        not); returns the loss (a device tensor or a float)."""
        net = self.net
        if kind == "forward_backward" and release_diffs:
            kind = "forward_backward/release"
        calls = self.calls.get(kind, 0) + 1
        self.calls[kind] = calls
        graph = self.graphs.get(kind)
        if kind in self.disabled or (graph is None and calls < 2):
            return self._eager(kind)
        if graph is not None:
            if self.start:
                net._forward(0, self.start - 1, compute_loss=False)
            if graph.replay():
                return net._loss_tensor()
            LOG.info("use_cuda_graph: an input of net %s changed shape; capturing again",
                     net.name)
            del self.graphs[kind]
            self.calls[kind] = 0
            return self._run_body_eager(kind)
        return self._capture_and_check(kind)

    def _eager(self, kind: str) -> torch.Tensor | float:
        if kind == "forward":
            return self.net._forward()
        return self.net._forward_backward_eager(kind.endswith("/release"))

    def _graph(self, kind: str) -> _Graph:
        base = "forward" if kind == "forward" else "forward_backward"
        return _Graph(self.net, self.start, base, kind.endswith("/release"))

    def _run_body_eager(self, kind: str) -> torch.Tensor | float:
        self._graph(kind).run_eager()
        return self.net._loss_tensor()

    def _capture_and_check(self, kind: str) -> float:
        net = self.net
        graph = self._graph(kind)
        saved = _State(graph)
        try:
            graph.capture()
        except Exception as e:  # capture refuses host syncs, CPU tensors, ...
            saved.restore()
            self.disabled[kind] = f"capture failed: {type(e).__name__}: {e}"
            LOG.warning("use_cuda_graph: net %s %s stays eager (%s)", net.name, kind,
                        self.disabled[kind])
            torch.cuda.synchronize()
            return self._eager(kind)
        saved.restore()
        if self.start:
            net._forward(0, self.start - 1, compute_loss=False)
        before = _State(graph)
        graph.replay()
        replayed, loss_g = _outputs(graph), net._loss()
        before.restore()
        graph.run_eager()
        eager, loss_e = _outputs(graph), net._loss()
        name, worst = _worst(replayed, eager)
        if abs(loss_g - loss_e) > RTOL * max(1.0, abs(loss_e)):
            name, worst = "loss", max(worst, 2.0)
        if worst > 1.0:
            self.disabled[kind] = (f"the replay differs from the eager pass at {name} "
                                   f"({worst:.3g}x the tolerance)")
            LOG.warning("use_cuda_graph: net %s %s stays eager: %s", net.name, kind,
                        self.disabled[kind])
        else:
            self.graphs[kind] = graph
            LOG.info("use_cuda_graph: net %s %s captured from layer '%s' on (%d layers)",
                     net.name, kind, net._layer_names[self.start], len(net._layers) - self.start)
        return loss_e
