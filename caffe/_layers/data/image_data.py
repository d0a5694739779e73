"""ImageData: batches of image files named in a list file (``path label`` per line), decoded
with OpenCV's conventions (BGR), optionally resized, then transformed by ``transform_param``.

``image_data_param { source root_folder batch_size new_height new_width is_color shuffle
rand_skip }``. Image paths are ``root_folder + path``. Tops: data ``(batch_size, C, h, w)``
(the first image of each batch sets the shape) and labels ``(batch_size,)``. The list wraps
around; with ``shuffle`` it is reshuffled at set-up and after every pass. No backward."""

from __future__ import annotations

import numpy as np

from caffe._common import LOG
from caffe.data import naming_layer
from caffe.data.base_layer import PrefetchingDataLayer
from caffe.data.prefetch import Batcher, decode_workers, new_seed, pin_batches
from caffe.data.readers import ImageList
from caffe.data.sources import read_labeled_list
from caffe.data.transformer import DataTransformer
from caffe.errors import FileFormatError, LayerSetupError
from caffe.registry import register_layer


@register_layer("ImageData")
class ImageData(PrefetchingDataLayer):
    min_top_blobs = 2

    def setup(self, bottom, top):
        p = self.layer_param.image_data_param
        batch_size = self.check_batch_size(p.batch_size, "image_data_param")
        height, width = int(p.new_height), int(p.new_width)
        if (height > 0) != (width > 0):
            raise LayerSetupError(
                f"Layer '{self.name}' (ImageData): set new_height and new_width together (got "
                f"{height} and {width})")
        rng = np.random.default_rng(new_seed())
        with naming_layer(self):
            transformer = DataTransformer(self.layer_param.transform_param, self.phase,
                                          f"Layer '{self.name}' (ImageData)")
            LOG.info("Opening file %s", p.source)
            entries = read_labeled_list(p.source, "image list file")
            if p.shuffle:
                LOG.info("Shuffling data")
            LOG.info("A total of %d images.", len(entries))
            start = 0
            if p.rand_skip:
                start = int(rng.integers(p.rand_skip))
                LOG.info("Skipping first %d data points.", start)
                if start >= len(entries):
                    raise FileFormatError(
                        f"image list file '{p.source}' has {len(entries)} images, not enough "
                        f"to skip {start} (rand_skip {p.rand_skip})")
            images = ImageList(entries, p.source, p.root_folder, batch_size, height, width,
                               bool(p.is_color), bool(p.shuffle), rng, start)
            img, _, where = images.loader(images.entries[start])()
            shape = transformer.output_shape(img.shape, where)
        self.shape_tops(top, batch_size, shape)
        batcher = Batcher(transformer, new_seed(), decode_workers(True), pin_batches())
        self.start_prefetch(images, batcher, self.layer_param.data_param.prefetch)
