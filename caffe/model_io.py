"""Weights in and out: binary caffemodels (NetParameter with blobs) and Caffe's HDF5 layout
(``/data/<layer>/<i>`` and ``/diff/<layer>/<i>``).

Loading matches layers by name, as Caffe's CopyTrainedLayersFrom: source layers the net does
not have are skipped with a log line; a shape mismatch or another number of blobs raises
naming the layer; legacy 4-D BlobProto shapes (num/channels/height/width, which win over a
BlobShape) match the trailing axes; a saved diff is restored with the data. Of two net layers
of one name, a binary file fills the first and an HDF5 file the last, as Caffe does.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np
import torch

from caffe._common import LOG
from caffe.errors import FileFormatError, NetDefinitionError, ShapeMismatchError
from caffe.proto import caffe_pb2, files, upgrade

if TYPE_CHECKING:
    from caffe.net import Net


# ---------------------------------------------------------------------------- BlobProto
def has_legacy_shape(bp: caffe_pb2.BlobProto) -> bool:
    """Whether a BlobProto sets any of the legacy num/channels/height/width fields."""
    return any(bp.HasField(f) for f in ("num", "channels", "height", "width"))


def proto_shape(bp: caffe_pb2.BlobProto) -> tuple[int, ...]:
    """The shape a BlobProto declares: its legacy 4-D fields when any is set (they win over a
    BlobShape, as in Caffe's Blob::FromProto), else its BlobShape, else (count,)."""
    if has_legacy_shape(bp):
        return (bp.num, bp.channels, bp.height, bp.width)
    if bp.HasField("shape"):
        return tuple(int(d) for d in bp.shape.dim)
    return (len(bp.data) or len(bp.double_data),)


def _legacy_shape(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if len(shape) > 4:
        return None
    return (1,) * (4 - len(shape)) + tuple(shape)


def blobproto_to_array(bp: caffe_pb2.BlobProto, source: str = "<blob>",
                       diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or diff) as a float32 array of its declared shape. The element count
    is checked against the shape before anything of that size is allocated."""
    shape = proto_shape(bp)
    if any(d < 0 for d in shape):
        raise FileFormatError(f"{source}: blob declares a negative dimension {shape}")
    count = math.prod(shape)  # exact: an int64 product could wrap around to 0
    values = (bp.double_diff or bp.diff) if diff else (bp.double_data or bp.data)
    if len(values) != count:
        raise FileFormatError(
            f"{source}: blob declares shape {shape} ({count} values) but holds {len(values)}")
    arr = np.array(values, dtype=np.float32) if count else np.zeros(0, np.float32)
    try:
        return arr.reshape(shape)
    except ValueError as e:  # numpy refuses shapes like (0, 2**31, 2**31)
        raise FileFormatError(f"{source}: blob shape {shape} is not a valid array shape "
                              f"({e})") from None


def array_to_blobproto(arr: np.ndarray, diff: np.ndarray | None = None) -> caffe_pb2.BlobProto:
    bp = caffe_pb2.BlobProto()
    arr = np.asarray(arr, dtype=np.float32)
    bp.shape.dim.extend(arr.shape)
    bp.data.extend(arr.ravel().tolist())
    if diff is not None:
        bp.diff.extend(np.asarray(diff, dtype=np.float32).ravel().tolist())
    return bp


def _check_shape(layer_name: str, j: int, target: tuple[int, ...], source: tuple[int, ...],
                 legacy: bool, path: str) -> None:
    if target == source:
        return
    if legacy and _legacy_shape(target) == tuple(source):
        return
    raise ShapeMismatchError(
        f"Cannot copy param {j} weights from layer '{layer_name}' in {path}: shape mismatch. "
        f"Source param shape is {' '.join(map(str, source))} "
        f"({math.prod(source)}); target param shape is "
        f"{' '.join(map(str, target))} ({math.prod(target)}). To learn this "
        "layer's parameters from scratch rather than copying from a saved net, rename the layer.")


def fill_tensor(target: torch.Tensor, arr: np.ndarray) -> None:
    """Copy ``arr`` into a blob's data or diff tensor, of the same count."""
    target.copy_(torch.from_numpy(np.ascontiguousarray(arr)).reshape(target.shape))


# ---------------------------------------------------------------------------- loading
def read_weights_proto(path: str) -> caffe_pb2.NetParameter:
    """Read a binary caffemodel (current, V1 or V0 format; V0 is upgraded to V1)."""
    return upgrade.read_weights_param(path)


def _layers_with_blobs(param: caffe_pb2.NetParameter, path: str):
    """(name, blobs) of every source layer, from the current or the V1 field. A file with both
    is read as its V1 net, the rule the net upgrade follows (``upgrade_v1_net``)."""
    if param.layers and param.layer:
        LOG.warning("%s has both V1 'layers' and current 'layer' entries; the %d 'layer' "
                    "entries are ignored", path, len(param.layer))
    for lp in param.layers or param.layer:
        yield lp.name, lp.blobs


def _is_hdf5(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def copy_trained_layers(net: Net, path: str) -> None:
    """Copy parameters into ``net`` by layer name from a caffemodel or an HDF5 weights file."""
    if not os.path.exists(path):
        raise FileFormatError(f"weights file '{path}' does not exist")
    if path.endswith((".h5", ".hdf5")) or _is_hdf5(path):
        _copy_from_hdf5(net, path)
        return
    param = read_weights_proto(path)
    by_name = net._first_layers_by_name()  # of two layers of one name, Caffe fills the first
    matched = 0
    ignored = []
    for name, blobs in _layers_with_blobs(param, path):
        layer = by_name.get(name)
        if layer is None:
            if len(blobs):
                ignored.append(name)
            LOG.info("Ignoring source layer %s", name)
            continue
        if len(blobs) != len(layer.blobs):
            raise ShapeMismatchError(
                f"Incompatible number of blobs for layer '{name}' in {path}: the file has "
                f"{len(blobs)}, the net's layer ({layer.type}) has {len(layer.blobs)}")
        arrays, diffs = [], []
        for j, bp in enumerate(blobs):
            where = f"{path}: layer '{name}' blob {j}"
            _check_shape(name, j, layer.blobs[j].shape, proto_shape(bp),
                         has_legacy_shape(bp), path)
            arrays.append(blobproto_to_array(bp, where))
            # a diff saved with the weights (snapshot_diff) is restored too, as Caffe does
            diffs.append(blobproto_to_array(bp, where, diff=True)
                         if len(bp.diff) or len(bp.double_diff) else None)
        for blob, arr, diff in zip(layer.blobs, arrays, diffs):
            fill_tensor(blob.tensor, arr)
            if diff is not None:
                fill_tensor(blob.diff_tensor, diff)
        matched += 1
    if ignored and matched == 0:
        LOG.warning("No layer of %s matches a layer of net '%s'; the file's layers with "
                    "weights are: %s", path, net.name, ignored)


#: An HDF5 dataset may declare more bytes than the file stores (compression, fill values);
#: beyond this allowance, no more than deflate's best ratio (about 1032:1) is believed.
HDF5_SLACK_BYTES = 16 << 20
HDF5_MAX_RATIO = 1100


def hdf5_dataset(obj, where: str):
    """``obj`` (an h5py object, or None for a missing or dangling link) as a numeric dataset
    that the file can back. Raises FileFormatError naming ``where`` for anything else, and for
    a dataset declaring far more data than the file stores, before anything is allocated."""
    import h5py

    if not isinstance(obj, h5py.Dataset):
        what = "missing (or a dangling link)" if obj is None else f"a {type(obj).__name__}"
        raise FileFormatError(f"{where} is {what}, not a dataset")
    if obj.shape is None:
        raise FileFormatError(f"{where} is an empty HDF5 dataset (no dataspace)")
    if obj.dtype.kind not in "fiub":
        raise FileFormatError(f"{where} has the unsupported type {obj.dtype}; use a float or "
                              "integer type")
    need = obj.size * max(obj.dtype.itemsize, 4)
    stored = obj.id.get_storage_size()
    if need > HDF5_SLACK_BYTES and need > HDF5_MAX_RATIO * stored:
        raise FileFormatError(
            f"{where} declares shape {obj.shape} ({need} bytes to read) but the file stores "
            f"{stored} bytes of it; refusing to allocate what the file cannot hold")
    return obj


def hdf5_read(obj, where: str) -> np.ndarray:
    """An HDF5 dataset checked by :func:`hdf5_dataset`, read as float32."""
    ds = hdf5_dataset(obj, where)
    try:
        return np.asarray(ds[()], dtype=np.float32)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise FileFormatError(f"cannot read {where}: {e}") from None


def _copy_from_hdf5(net: Net, path: str) -> None:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise FileFormatError(f"cannot open HDF5 weights file '{path}': {e}") from None
    with f:
        data = f.get("data")
        if not isinstance(data, h5py.Group):
            raise FileFormatError(f"{path}: HDF5 weights need a group '/data'; found "
                                  f"{list(f.keys())}")
        # as Caffe: the file's layers in name order, each into the net's last layer of that
        # name; net layers the file lacks keep their values ('/' in a name nests groups)
        index = {name: li for li, name in enumerate(net._layer_names) if name}
        for name in data:
            if name not in index and not any(n.startswith(name + "/") for n in index):
                LOG.info("Ignoring source layer %s", name)
        for name in sorted(index):
            group = data.get(name)
            if group is None:
                continue
            li = index[name]
            layer = net._layers[li]
            if not isinstance(group, h5py.Group):
                raise FileFormatError(f"{path}: '/data/{name}' should be a group of datasets "
                                      f"'0', '1', ...; it is a {type(group).__name__}")
            n_src = sum(1 for key in group if key.isdigit())  # '/' in names nests groups
            if n_src > len(layer.blobs):
                raise ShapeMismatchError(
                    f"Incompatible number of blobs for layer '{name}' in {path}: the file has "
                    f"{n_src}, the net's layer has {len(layer.blobs)}")
            for j, blob in enumerate(layer.blobs):
                key = str(j)
                if key not in group:
                    net_pid = net._param_id_vecs[li][j]
                    if net._param_owners[net_pid] >= 0:
                        continue
                    raise ShapeMismatchError(
                        f"Incompatible number of blobs for layer '{name}' in {path}: "
                        f"dataset '{key}' is missing")
                where = f"{path}: '/data/{name}/{key}'"
                ds = hdf5_dataset(group.get(key), where)
                _check_shape(name, j, blob.shape, tuple(ds.shape), True, path)
                fill_tensor(blob.tensor, hdf5_read(ds, where))


# ---------------------------------------------------------------------------- saving
def net_to_proto(net: Net, write_diff: bool = False) -> caffe_pb2.NetParameter:
    """The net as Caffe's Net::ToProto writes it: name, then every layer with its blobs."""
    out = caffe_pb2.NetParameter()
    out.name = net.name
    for layer in net._layers:
        lp = out.layer.add()
        lp.CopyFrom(layer.layer_param)
        lp.ClearField("blobs")
        for blob in layer.blobs:
            bp = array_to_blobproto(blob.data, blob.diff if write_diff else None)
            lp.blobs.add().CopyFrom(bp)
    return out


def save_hdf5(net: Net, path: str, write_diff: bool = False) -> None:
    """Write parameters in Caffe's HDF5 layout (``/data/<layer>/<j>``, a group per named
    layer). The file is built in memory, then written to a temporary file, flushed and renamed,
    so a crash leaves the old file or the new one. Layers are found by name: two layers with
    parameters may not share one (nor have none); ``/`` in a name nests groups, as in Caffe."""
    import io

    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        data = f.create_group("data")
        diff = f.create_group("diff") if write_diff else None
        for li, (name, layer) in enumerate(zip(net._layer_names, net._layers)):
            owned = [j for j, net_pid in enumerate(net._param_id_vecs[li])
                     if net._param_owners[net_pid] == -1]
            if owned and (not name or str(owned[0]) in data.get(name, {})):
                raise NetDefinitionError(
                    f"cannot save '{path}' as HDF5: layer #{li} ({layer.type}) "
                    + (f"is the second layer named '{name}'" if name else "has no name")
                    + " with parameters, and HDF5 weights are found by layer name; give each "
                    "layer with parameters its own name (or save a binary caffemodel)")
            if not name:
                continue
            gd = data.require_group(name)
            for j in owned:
                gd.create_dataset(str(j), data=layer.blobs[j].data)
            if diff is not None:  # every diff, shared parameters' too, as Caffe writes them
                gf = diff.require_group(name)
                for j, blob in enumerate(layer.blobs):
                    gf.create_dataset(str(j), data=blob.diff)
    files.write_atomic(path, buf.getvalue())
