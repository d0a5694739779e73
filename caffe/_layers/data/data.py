"""Data: batches of Datums read from an LMDB or LevelDB database in key order, transformed by
``transform_param`` (see :mod:`caffe.data.transformer`), prefetched in the background.

``data_param { source backend: LMDB|LEVELDB batch_size rand_skip prefetch }``. Tops: data
``(batch_size, C, crop or H, crop or W)`` (the first Datum of each batch sets it) and, when
a second top is given, labels ``(batch_size,)``. Reading starts at the first record and wraps
around at the end of the database; ``rand_skip`` is deprecated and ignored, as in Caffe master.
Raw uint8, ``float_data`` and encoded (JPEG/PNG, decoded to BGR) Datums are read. No
backward."""

from __future__ import annotations

from caffe._common import LOG
from caffe.data import naming_layer
from caffe.data.base_layer import PrefetchingDataLayer
from caffe.data.db import open_reader
from caffe.data.prefetch import Batcher, decode_workers, new_seed, pin_batches
from caffe.data.readers import DatumRecords
from caffe.data.transformer import DataTransformer
from caffe.registry import register_layer


@register_layer("Data")
class Data(PrefetchingDataLayer):
    def setup(self, bottom, top):
        p = self.layer_param.data_param
        batch_size = self.check_batch_size(p.batch_size, "data_param")
        with naming_layer(self):
            transformer = DataTransformer(self.layer_param.transform_param, self.phase,
                                          f"Layer '{self.name}' (Data)")
            color = True if p.force_encoded_color and transformer.color is None \
                else transformer.color
            reader = open_reader(p.source, p.backend)
            try:
                records = DatumRecords(reader, batch_size, color, self.phase)
                key, value = reader.first()
                img, _, where = records.loader_for(0, key, value)()
                shape = transformer.output_shape(img.shape, where)
                encoded = records.is_encoded(value)
            except BaseException:
                reader.close()
                raise
        if p.rand_skip:
            LOG.info("Layer '%s': data_param.rand_skip is deprecated and ignored, as in Caffe: "
                     "reading starts at the first record", self.name)
        self.shape_tops(top, batch_size, shape)
        batcher = Batcher(transformer, new_seed(), decode_workers(encoded), pin_batches())
        self.start_prefetch(records, batcher, p.prefetch)
