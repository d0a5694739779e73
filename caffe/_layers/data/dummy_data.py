"""DummyData: tops of given shapes filled by fillers (constant 0 by default). As in Caffe,
constant tops are filled once at setup; tops with another filler read zeros until the first
forward and are refilled at every forward, in place on the top's device (on the CPU with the
seeded generator, the numbers ``fill`` gives).

``dummy_data_param { shape {...} data_filler {...} }``, one shape/filler for all tops or one per
top; the legacy num/channels/height/width lists each hold one value for all tops or one per
top."""

from __future__ import annotations

from caffe.errors import LayerSetupError
from caffe.fillers import check, fill, refill_
from caffe.layer import Layer
from caffe.proto import caffe_pb2
from caffe.registry import register_layer


@register_layer("DummyData")
class DummyData(Layer):
    graph_safe = False
    exact_num_bottom_blobs = 0
    min_top_blobs = 1
    has_backward = False

    def setup(self, bottom, top):
        p = self.layer_param.dummy_data_param
        n = len(top)
        legacy = len(p.num) + len(p.channels) + len(p.height) + len(p.width)
        if legacy and len(p.shape):
            raise LayerSetupError(
                f"Layer '{self.name}' (DummyData): give either shape or num/channels/height/"
                "width, not both")
        if legacy:
            for field in ("num", "channels", "height", "width"):
                if len(getattr(p, field)) not in (1, n):
                    raise LayerSetupError(
                        f"Layer '{self.name}' (DummyData): {field} has "
                        f"{len(getattr(p, field))} values; give 1, or {n} (one per top)")
            shapes = [(p.num[i % len(p.num)], p.channels[i % len(p.channels)],
                       p.height[i % len(p.height)], p.width[i % len(p.width)]) for i in range(n)]
        else:
            if len(p.shape) not in (1, n):
                raise LayerSetupError(
                    f"Layer '{self.name}' (DummyData) has {n} tops and {len(p.shape)} shapes; "
                    "give one shape per top or one for all")
            shapes = [tuple(p.shape[i if len(p.shape) > 1 else 0].dim) for i in range(n)]
        if len(p.data_filler) not in (0, 1, n):
            raise LayerSetupError(
                f"Layer '{self.name}' (DummyData) has {n} tops and {len(p.data_filler)} "
                "data_filler entries; give 0, 1 or one per top")
        if len(p.data_filler) == 0:
            fillers = [caffe_pb2.FillerParameter(type="constant", value=0)] * n
        else:
            fillers = [p.data_filler[i if len(p.data_filler) > 1 else 0] for i in range(n)]
        # the tops drawn again at every forward, with their fillers
        self.refilled = [(i, f) for i, f in enumerate(fillers) if f.type != "constant"]
        for t, shape, f in zip(top, shapes, fillers):
            t.reshape(shape)
            check(f, tuple(t.shape))
            if f.type == "constant":
                fill(t, f)

    def reshape(self, bottom, top):
        """Shapes are fixed at setup."""

    def forward(self, bottom, top):
        for i, f in self.refilled:
            refill_(top[i].tensor, f)
