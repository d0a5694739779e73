"""The conformance case with a NumPy Python layer also passes with an autograd layer (no
backward) and with a torch_blobs layer swapped in for it (runs ../shared/conformance/check.py
when the shared folder is present)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFORMANCE = os.path.join(os.path.dirname(ROOT), "shared", "conformance")
CASE = os.path.join(CONFORMANCE, "cases", "python_euclidean_linreg")

VARIANTS = {
    "autograd": '''
        import caffe


        class EuclideanLossLayer(caffe.Layer):
            """loss = sum((a - b)^2) / (2 num) in torch; autograd supplies the backward."""

            exact_num_bottom_blobs = 2

            def reshape(self, bottom, top):
                top[0].reshape(1)

            def forward(self, bottom, top):
                diff = bottom[0].tensor - bottom[1].tensor.reshape(bottom[0].shape)
                top[0].tensor = (diff * diff).sum().reshape(1) / bottom[0].shape[0] / 2
    ''',
    "torch_blobs": '''
        import caffe


        class EuclideanLossLayer(caffe.Layer):
            """The same loss on device tensors (torch_blobs), with an explicit backward."""

            torch_blobs = True
            exact_num_bottom_blobs = 2

            def reshape(self, bottom, top):
                top[0].reshape(1)

            def forward(self, bottom, top):
                self.diff = bottom[0].data - bottom[1].data.reshape(bottom[0].shape)
                top[0].data[...] = (self.diff * self.diff).sum() / bottom[0].shape[0] / 2

            def backward(self, top, propagate_down, bottom):
                for i, sign in ((0, 1.0), (1, -1.0)):
                    if propagate_down[i]:
                        g = sign * self.diff * top[0].diff[0] / bottom[i].shape[0]
                        bottom[i].diff = g.reshape(bottom[i].shape)
    ''',
}


@pytest.mark.skipif(not os.path.isdir(CASE), reason="../shared/conformance is not present")
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_swapped_python_layer_passes_conformance(tmp_path, variant):
    case = tmp_path / "cases" / "python_euclidean_linreg"
    shutil.copytree(CASE, case)
    (case / "py_euclidean_loss.py").write_text(textwrap.dedent(VARIANTS[variant]))
    res = subprocess.run([sys.executable, os.path.join(CONFORMANCE, "check.py"), "--cases",
                          str(tmp_path / "cases"), "-v"], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed, 0 failed" in res.stdout
