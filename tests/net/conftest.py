"""Fixtures for Net tests: a Python-layer module written to a temporary folder on sys.path."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

PY_LAYERS = textwrap.dedent('''
    import numpy as np
    import caffe


    class EuclideanLoss(caffe.Layer):
        """loss = sum((a - b)^2) / (2 N), the classic pycaffe example."""

        def setup(self, bottom, top):
            if len(bottom) != 2:
                raise Exception("Need two inputs to compute distance.")

        def reshape(self, bottom, top):
            if bottom[0].count != bottom[1].count:
                raise Exception("Inputs must have the same dimension.")
            self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
            top[0].reshape(1)

        def forward(self, bottom, top):
            self.diff[...] = bottom[0].data - bottom[1].data
            top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.

        def backward(self, top, propagate_down, bottom):
            for i in range(2):
                if not propagate_down[i]:
                    continue
                sign = 1 if i == 0 else -1
                bottom[i].diff[...] = sign * self.diff / bottom[i].num


    class LearnedScale(caffe.Layer):
        """y = w * x with one learnable scalar w (initialized to 1)."""

        def setup(self, bottom, top):
            self.blobs.add_blob(1)
            self.blobs[0].data[...] = 1.0

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            top[0].data[...] = self.blobs[0].data[0] * bottom[0].data

        def backward(self, top, propagate_down, bottom):
            self.blobs[0].diff[0] += np.sum(top[0].diff * bottom[0].data)
            if propagate_down[0]:
                bottom[0].diff[...] = self.blobs[0].data[0] * top[0].diff


    class ParamStr(caffe.Layer):
        """Records param_str and phase; y = x * value from param_str."""

        def setup(self, bottom, top):
            self.seen_phase = self.phase
            self.value = float(self.param_str)

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            top[0].data[...] = bottom[0].data * self.value

        def backward(self, top, propagate_down, bottom):
            bottom[0].diff[...] = top[0].diff * self.value


    class Cube(caffe.Layer):
        """y = x^3 with torch ops and no backward: autograd provides it."""

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].shape)

        def forward(self, bottom, top):
            top[0].tensor[...] = bottom[0].tensor ** 3


    class Broken(caffe.Layer):
        def setup(self, bottom, top):
            pass

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            raise ValueError("boom in user code")


    class NumpyNoBackward(caffe.Layer):
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            top[0].data[...] = bottom[0].data * 2
''')


@pytest.fixture
def python_layer_module(tmp_path):
    name = "pylayers_" + uuid.uuid4().hex[:8]
    (tmp_path / f"{name}.py").write_text(PY_LAYERS)
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
