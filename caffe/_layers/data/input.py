"""Input: tops of fixed shapes that the user fills (``net.blobs[name].data[...] = x``).

No bottoms; one top per ``input_param.shape`` (or a single shape shared by every top)."""

from __future__ import annotations

from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("Input")
class Input(Layer):
    exact_num_bottom_blobs = 0
    min_top_blobs = 1
    has_backward = False

    def setup(self, bottom, top):
        shapes = self.layer_param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise LayerSetupError(
                f"Layer '{self.name}' (Input) has {len(top)} tops but {len(shapes)} shapes; "
                "give one shape per top, or one shape for all")
        for i, t in enumerate(top):
            if shapes:
                t.reshape(tuple(shapes[i if len(shapes) > 1 else 0].dim))

    def reshape(self, bottom, top):
        """The user owns the shapes of the tops: nothing to do."""

    def forward(self, bottom, top):
        """The tops already hold the user's data."""
