"""HDF5Output: writes its two bottoms to the HDF5 file ``hdf5_output_param.file_name`` as
float32 datasets ``data`` and ``label`` with Caffe's legacy 4-D shapes (``(N, C, H, W)``, a
label vector becomes ``(N, 1, 1, 1)``).

The file is created (truncated) at set-up and written by the forward pass. As in Caffe, a file
holds one batch: a second forward raises instead of overwriting it. No tops; nothing to
backpropagate."""

from __future__ import annotations

import os

import h5py
import numpy as np

from caffe.errors import FileFormatError, ShapeMismatchError
from caffe.layer import Layer
from caffe.registry import register_layer


@register_layer("HDF5Output")
class HDF5Output(Layer):
    graph_safe = False
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 0
    has_backward = False

    def setup(self, bottom, top):
        self.file_name = self.layer_param.hdf5_output_param.file_name
        if not self.file_name:
            raise FileFormatError(
                f"Layer '{self.name}' (HDF5Output) needs hdf5_output_param.file_name")
        try:
            h5py.File(self.file_name, "w").close()
        except OSError as e:
            raise FileFormatError(
                f"Layer '{self.name}' (HDF5Output) cannot create HDF5 file '{self.file_name}' "
                f"(working directory {os.getcwd()}): {e}") from None
        self.written = False

    def _legacy(self, blob, what: str) -> tuple[int, ...]:
        if blob.num_axes > 4:
            raise ShapeMismatchError(
                f"Layer '{self.name}' (HDF5Output): the {what} bottom has {blob.num_axes} axes "
                f"{blob.shape}; Caffe's HDF5 output writes at most 4 (num, channels, height, "
                "width)")
        return (blob.num, blob.channels, blob.height, blob.width)

    def reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise ShapeMismatchError(
                f"Layer '{self.name}' (HDF5Output): data and label bottoms must have the same "
                f"batch size; got shapes {bottom[0].shape} and {bottom[1].shape}")

    def forward(self, bottom, top):
        if self.written:
            raise FileFormatError(
                f"Layer '{self.name}' (HDF5Output): '{self.file_name}' already holds a batch; "
                "as in Caffe, an HDF5Output file takes one forward pass (build a new net to "
                "write another file)")
        shapes = [self._legacy(b, w) for b, w in zip(bottom, ("data", "label"))]
        try:
            with h5py.File(self.file_name, "r+") as f:
                for name, blob, shape in zip(("data", "label"), bottom, shapes):
                    arr = np.asarray(blob.data, dtype=np.float32).reshape(shape)
                    f.create_dataset(name, data=arr)
        except OSError as e:
            raise FileFormatError(
                f"Layer '{self.name}' (HDF5Output) cannot write HDF5 file '{self.file_name}': "
                f"{e}") from None
        self.written = True
