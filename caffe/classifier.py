"""pycaffe's ``caffe.Classifier``: a TEST-phase net that classifies images, resizing them to
``image_dims`` and averaging the predictions over ten crops (corners, centre and their
mirrors) or taking the centre crop."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from caffe import io
from caffe.layer import TEST
from caffe.net import Net


class Classifier(Net):
    """``Classifier(model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
    raw_scale=None, channel_swap=None)``: the preprocessing arguments configure
    :attr:`transformer` (a :class:`caffe.io.Transformer` for the first input, transposing
    ``H x W x K`` images to ``K x H x W``)."""

    def __init__(self, model_file: str, pretrained_file: str,
                 image_dims: Sequence[int] | None = None, mean: np.ndarray | None = None,
                 input_scale: float | None = None, raw_scale: float | None = None,
                 channel_swap: Sequence[int] | None = None) -> None:
        super().__init__(model_file, TEST, weights=pretrained_file)
        in_ = self.inputs[0]
        self.transformer = io.net_input_transformer(self, mean, input_scale, raw_scale,
                                                    channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        self.image_dims = np.array(image_dims if image_dims is not None else self.crop_dims)

    def predict(self, inputs: Sequence[np.ndarray], oversample: bool = True) -> np.ndarray:
        """Class scores ``(N, classes)`` for ``N`` images (``H x W x K`` arrays, as from
        :func:`caffe.io.load_image`)."""
        h, w = (int(d) for d in self.image_dims)
        batch = np.stack([io.resize_image(im, (h, w)) for im in inputs])
        if oversample:
            batch = io.oversample(batch, self.crop_dims)
        else:
            ch, cw = (int(d) for d in self.crop_dims)
            top, left = int(h / 2.0 - ch / 2.0), int(w / 2.0 - cw / 2.0)
            batch = batch[:, top:top + ch, left:left + cw, :]
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, im) for im in batch])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape(len(predictions) // 10, 10, -1).mean(1)
        return predictions
