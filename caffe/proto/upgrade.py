"""Upgrades of old Caffe net and solver descriptions to the current format, as Caffe applies
them on every load (text prototxts and binary caffemodels alike).

Nets, in this order:

* **V0 -> V1**: ``layers { layer { type: "conv" ... } }`` (string types, flat fields) become
  V1 layers (enum types, ``*_param`` messages); a ``padding`` layer is folded into the pad of
  the conv/pool layer that consumes it.
* **data transformation**: ``scale`` / ``mean_file`` / ``crop_size`` / ``mirror`` of V1 Data,
  ImageData and WindowData layers move into ``transform_param``.
* **V1 -> V2**: ``layers { type: CONVOLUTION }`` become ``layer { type: "Convolution" }``;
  ``blobs_lr`` / ``weight_decay`` / ``blob_share_mode`` / ``param`` names become ``param { }``.
* **input**: legacy ``input`` + ``input_shape`` / ``input_dim`` become a leading Input layer.
* **BatchNorm**: a BatchNorm layer declaring three ``param`` gets ``lr_mult: 0`` and
  ``decay_mult: 0`` on each (its blobs are statistics, not learned).

Solvers: the ``solver_type`` enum becomes the ``type`` string.

Problems Caffe only logs (a V0 field the layer type does not have, a V1 net that also has
``layer`` entries) are logged as warnings and collected; problems Caffe aborts on (an unknown V0
type, a padding layer in front of something other than conv/pool, an unknown enum value) raise
:class:`caffe.errors.ProtoError` naming the file and the layer.
"""

from __future__ import annotations

from google.protobuf import message as pb_message
from google.protobuf import unknown_fields

from caffe._common import LOG
from caffe.errors import FileFormatError, ProtoError, SolverError
from caffe.proto import caffe_pb2, files, tolerant

V1 = caffe_pb2.V1LayerParameter

#: V1 layer type enum -> current type string (Caffe's UpgradeV1LayerType).
V1_LAYER_TYPES: dict[int, str] = {
    V1.NONE: "",
    V1.ABSVAL: "AbsVal",
    V1.ACCURACY: "Accuracy",
    V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL",
    V1.CONCAT: "Concat",
    V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution",
    V1.DECONVOLUTION: "Deconvolution",
    V1.DATA: "Data",
    V1.DROPOUT: "Dropout",
    V1.DUMMY_DATA: "DummyData",
    V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise",
    V1.EXP: "Exp",
    V1.FLATTEN: "Flatten",
    V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output",
    V1.HINGE_LOSS: "HingeLoss",
    V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData",
    V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct",
    V1.LRN: "LRN",
    V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    V1.MVN: "MVN",
    V1.POOLING: "Pooling",
    V1.POWER: "Power",
    V1.RELU: "ReLU",
    V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax",
    V1.SOFTMAX_LOSS: "SoftmaxWithLoss",
    V1.SPLIT: "Split",
    V1.SLICE: "Slice",
    V1.TANH: "TanH",
    V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
}

#: V0 type string -> V1 layer type enum (Caffe's UpgradeV0LayerType).
V0_LAYER_TYPES: dict[str, int] = {
    "accuracy": V1.ACCURACY,
    "bnll": V1.BNLL,
    "concat": V1.CONCAT,
    "conv": V1.CONVOLUTION,
    "data": V1.DATA,
    "dropout": V1.DROPOUT,
    "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN,
    "hdf5_data": V1.HDF5_DATA,
    "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL,
    "images": V1.IMAGE_DATA,
    "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT,
    "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS,
    "pool": V1.POOLING,
    "relu": V1.RELU,
    "sigmoid": V1.SIGMOID,
    "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS,
    "split": V1.SPLIT,
    "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

_CONV_IP = ("conv", "innerproduct")
_CONV_POOL = ("conv", "pool")
_SOURCE_TYPES = {"data": "data_param", "hdf5_data": "hdf5_data_param",
                 "images": "image_data_param", "window_data": "window_data_param"}
_PARAM_OF = {"conv": "convolution_param", "innerproduct": "inner_product_param",
             "pool": "pooling_param", **_SOURCE_TYPES}


def _per_type(types, field: str) -> dict[str, str]:
    """{V0 type: "<its V1 *_param>.<field>"} for each of ``types``."""
    return {t: f"{_PARAM_OF[t]}.{field}" for t in types}


#: V0 field -> {V0 type that has it: "<V1 *_param>.<field>"}. A V0 field set on a type not
#: listed is dropped with a warning, as Caffe does.
_V0_FIELDS: dict[str, dict[str, str]] = {
    "num_output": _per_type(_CONV_IP, "num_output"),
    "biasterm": _per_type(_CONV_IP, "bias_term"),
    "weight_filler": _per_type(_CONV_IP, "weight_filler"),
    "bias_filler": _per_type(_CONV_IP, "bias_filler"),
    "pad": _per_type(_CONV_POOL, "pad"),
    "kernelsize": _per_type(_CONV_POOL, "kernel_size"),
    "group": {"conv": "convolution_param.group"},
    "stride": _per_type(_CONV_POOL, "stride"),
    "pool": {"pool": "pooling_param.pool"},
    "dropout_ratio": {"dropout": "dropout_param.dropout_ratio"},
    "local_size": {"lrn": "lrn_param.local_size"},
    "alpha": {"lrn": "lrn_param.alpha"},
    "beta": {"lrn": "lrn_param.beta"},
    "k": {"lrn": "lrn_param.k"},
    "source": {**_per_type(_SOURCE_TYPES, "source"),
               "infogain_loss": "infogain_loss_param.source"},
    "batchsize": _per_type(_SOURCE_TYPES, "batch_size"),
    "rand_skip": _per_type(("data", "images"), "rand_skip"),
    "shuffle_images": {"images": "image_data_param.shuffle"},
    "new_height": {"images": "image_data_param.new_height"},
    "new_width": {"images": "image_data_param.new_width"},
    "concat_dim": {"concat": "concat_param.concat_dim"},
    "det_fg_threshold": {"window_data": "window_data_param.fg_threshold"},
    "det_bg_threshold": {"window_data": "window_data_param.bg_threshold"},
    "det_fg_fraction": {"window_data": "window_data_param.fg_fraction"},
    "det_context_pad": {"window_data": "window_data_param.context_pad"},
    "det_crop_mode": {"window_data": "window_data_param.crop_mode"},
    "hdf5_output_param": {"hdf5_output": "hdf5_output_param"},
}

#: V0 fields that go to transform_param whatever the layer type.
_V0_TRANSFORM_FIELDS = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size",
                        "mirror": "mirror"}

#: the deprecated transformation fields of V1 data layers' own parameters
_DATA_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")
_DATA_PARAM_OF_V1_TYPE = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param",
                          V1.WINDOW_DATA: "window_data_param"}

_SOLVER_TYPES = {
    caffe_pb2.SolverParameter.SGD: "SGD",
    caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
    caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad",
    caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
    caffe_pb2.SolverParameter.ADADELTA: "AdaDelta",
    caffe_pb2.SolverParameter.ADAM: "Adam",
}


def _problem(problems: list[str] | None, text: str) -> None:
    LOG.warning(text)
    if problems is not None:
        problems.append(text)


def _assign(msg: pb_message.Message, path: str, value) -> None:
    """Set ``msg.<a>.<b>`` = value: append for a repeated field, copy for a message."""
    *parents, field = path.split(".")
    for p in parents:
        msg = getattr(msg, p)
    fd = msg.DESCRIPTOR.fields_by_name[field]
    if fd.is_repeated:
        getattr(msg, field).append(value)
    elif fd.message_type is not None:
        getattr(msg, field).CopyFrom(value)
    else:
        setattr(msg, field, value)


# ---------------------------------------------------------------------------- checks
def net_needs_v0_upgrade(param: caffe_pb2.NetParameter) -> bool:
    """V0 nets nest a V0 ``layer`` message in each ``layers`` entry."""
    return any(lp.HasField("layer") for lp in param.layers)


def net_needs_v1_upgrade(param: caffe_pb2.NetParameter) -> bool:
    return len(param.layers) > 0


def net_needs_data_upgrade(param: caffe_pb2.NetParameter) -> bool:
    """True if a V1 data layer keeps transformation fields in its own parameter message."""
    for lp in param.layers:
        field = _DATA_PARAM_OF_V1_TYPE.get(lp.type)
        if field and any(getattr(lp, field).HasField(f) for f in _DATA_TRANSFORM_FIELDS):
            return True
    return False


def net_needs_input_upgrade(param: caffe_pb2.NetParameter) -> bool:
    return len(param.input) > 0


def net_needs_batchnorm_upgrade(param: caffe_pb2.NetParameter) -> bool:
    return any(lp.type == "BatchNorm" and len(lp.param) == 3 for lp in param.layer)


def net_needs_upgrade(param: caffe_pb2.NetParameter) -> bool:
    return (net_needs_v0_upgrade(param) or net_needs_v1_upgrade(param)
            or net_needs_data_upgrade(param) or net_needs_input_upgrade(param)
            or net_needs_batchnorm_upgrade(param))


# ---------------------------------------------------------------------------- V0 -> V1
def _fold_padding_layers(param: caffe_pb2.NetParameter, source: str) -> list:
    """The V0 layers without their ``padding`` layers, each padding folded into the pad of
    the conv/pool layer it feeds (which then reads the padding layer's input)."""
    producer: dict[str, int] = {name: -1 for name in param.input}
    kept = []
    for i, conn in enumerate(param.layers):
        v0 = conn.layer
        if v0.type != "padding":
            new = V1()
            new.CopyFrom(conn)
            kept.append(new)
        for j, blob in enumerate(conn.bottom):
            if blob not in producer:
                raise ProtoError(
                    f"{source}: V0 layer {i} '{v0.name}' bottom {j} is the unknown blob "
                    f"'{blob}': no input or earlier layer produces it")
            src = producer[blob]
            if src < 0 or param.layers[src].layer.type != "padding":
                continue
            pad = param.layers[src]
            if v0.type not in _CONV_POOL:
                raise ProtoError(
                    f"{source}: V0 padding layer '{pad.layer.name}' feeds layer '{v0.name}' of "
                    f"type '{v0.type}'; a padding layer can only feed a 'conv' or 'pool' layer")
            if len(conn.bottom) != 1 or len(pad.bottom) != 1 or len(pad.top) != 1:
                raise ProtoError(
                    f"{source}: V0 padding layer '{pad.layer.name}' and the layer '{v0.name}' it "
                    "feeds must each have exactly one bottom (and the padding layer one top)")
            kept[-1].layer.pad = pad.layer.pad
            kept[-1].bottom[j] = pad.bottom[0]
        for blob in conn.top:
            producer[blob] = i
    return kept


def upgrade_v0_layer(conn: caffe_pb2.V1LayerParameter, problems: list[str] | None = None,
                     source: str = "<net>") -> caffe_pb2.V1LayerParameter:
    """One V0 layer (a ``layers`` entry holding ``layer { ... }``) as a V1 layer."""
    out = V1()
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    if not conn.HasField("layer"):
        return out
    v0 = conn.layer
    if v0.HasField("name"):
        out.name = v0.name
    kind = v0.type
    if v0.HasField("type"):
        if kind not in V0_LAYER_TYPES:
            raise ProtoError(
                f"{source}: V0 layer '{v0.name}' has unknown type '{kind}'; V0 types are "
                f"{', '.join(sorted(V0_LAYER_TYPES))}")
        out.type = V0_LAYER_TYPES[kind]
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, targets in _V0_FIELDS.items():
        if not v0.HasField(field):
            continue
        target = targets.get(kind)
        if target is None:
            _problem(problems, f"{source}: V0 layer '{v0.name}': parameter {field} does not "
                               f"apply to layer type '{kind}'; it is dropped")
            continue
        value = getattr(v0, field)
        if field == "pool":
            value = caffe_pb2.PoolingParameter.PoolMethod.Value(
                caffe_pb2.V0LayerParameter.PoolMethod.Name(value))
        _assign(out, target, value)
    for field, target in _V0_TRANSFORM_FIELDS.items():
        if v0.HasField(field):
            setattr(out.transform_param, target, getattr(v0, field))
    return out


def upgrade_v0_net(param: caffe_pb2.NetParameter, source: str = "<net>",
                   problems: list[str] | None = None) -> None:
    """V0 -> V1 in place. As Caffe, only the name, the layers, the inputs and force_backward
    are kept."""
    layers = _fold_padding_layers(param, source)
    name = param.name if param.HasField("name") else None
    inputs, input_dim = list(param.input), list(param.input_dim)
    force = param.force_backward if param.HasField("force_backward") else None
    param.Clear()
    if name is not None:
        param.name = name
    for conn in layers:
        param.layers.append(upgrade_v0_layer(conn, problems, source))
    param.input.extend(inputs)
    param.input_dim.extend(input_dim)
    if force is not None:
        param.force_backward = force


# ---------------------------------------------------------------------------- data transform
def upgrade_net_data_transformation(param: caffe_pb2.NetParameter) -> None:
    """Move the transformation fields of V1 data layers into their ``transform_param``."""
    for lp in param.layers:
        field = _DATA_PARAM_OF_V1_TYPE.get(lp.type)
        if not field:
            continue
        own = getattr(lp, field)
        for f in _DATA_TRANSFORM_FIELDS:
            if own.HasField(f):
                setattr(lp.transform_param, f, getattr(own, f))
                own.ClearField(f)


# ---------------------------------------------------------------------------- V1 -> V2
_V1_PARAM_FIELDS = [f.name for f in V1.DESCRIPTOR.fields
                    if f.name.endswith("_param") and f.message_type is not None]
_V1_ENUM_FIELDS = {V1.DESCRIPTOR.fields_by_name["type"].number: "type",
                   V1.DESCRIPTOR.fields_by_name["blob_share_mode"].number: "blob_share_mode"}


def _check_v1_enums(lp: caffe_pb2.V1LayerParameter, index: int, source: str) -> None:
    """A binary V1 layer whose enum holds a number Caffe does not know keeps it as an unknown
    field; Caffe aborts there, and so do we, naming it."""
    for f in unknown_fields.UnknownFieldSet(lp):
        what = _V1_ENUM_FIELDS.get(f.field_number)
        if what:
            enum = V1.LayerType if what == "type" else V1.DimCheckMode
            raise ProtoError(
                f"{source}: V1 layer {index} '{lp.name}' has {what} = {f.data}, which is not a "
                f"value of V1LayerParameter.{enum.DESCRIPTOR.name} (known: "
                f"{', '.join(enum.keys())})")


def upgrade_v1_layer(v1: caffe_pb2.V1LayerParameter, source: str = "<net>",
                     index: int = 0) -> caffe_pb2.LayerParameter:
    """One V1 layer as a current LayerParameter."""
    _check_v1_enums(v1, index, source)
    lp = caffe_pb2.LayerParameter()
    lp.bottom.extend(v1.bottom)
    lp.top.extend(v1.top)
    if v1.HasField("name"):
        lp.name = v1.name
    lp.include.extend(v1.include)
    lp.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        lp.type = V1_LAYER_TYPES[v1.type]
    lp.blobs.extend(v1.blobs)
    n_specs = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr),
                  len(v1.weight_decay))
    for _ in range(n_specs):
        lp.param.add()
    for i, name in enumerate(v1.param):
        lp.param[i].name = name
    for i, mode in enumerate(v1.blob_share_mode):
        lp.param[i].share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(
            V1.DimCheckMode.Name(mode))
    for i, lr in enumerate(v1.blobs_lr):
        lp.param[i].lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        lp.param[i].decay_mult = decay
    lp.loss_weight.extend(v1.loss_weight)
    for field in _V1_PARAM_FIELDS:
        if v1.HasField(field):
            getattr(lp, field).CopyFrom(getattr(v1, field))
    return lp


def upgrade_v1_net(param: caffe_pb2.NetParameter, source: str = "<net>",
                   problems: list[str] | None = None) -> None:
    """V1 -> V2 in place: every ``layers`` entry becomes a ``layer``."""
    if param.layer:
        _problem(problems, f"{source}: the net has both V1 'layers' and current 'layer' "
                           f"entries; the {len(param.layer)} 'layer' entries are ignored")
    new = []
    for i, v1 in enumerate(param.layers):
        if v1.HasField("layer"):
            _problem(problems, f"{source}: V1 layer {i} '{v1.name}' also holds a V0 layer; "
                               "it is ignored")
        new.append(upgrade_v1_layer(v1, source, i))
    param.ClearField("layers")
    param.ClearField("layer")
    param.layer.extend(new)


# ---------------------------------------------------------------------------- input, BatchNorm
def upgrade_net_input(param: caffe_pb2.NetParameter, source: str = "<net>") -> None:
    """Replace legacy ``input`` + ``input_shape``/``input_dim`` by a leading Input layer. Inputs
    without any shape (as in old caffemodels) are simply dropped."""
    names = list(param.input)
    if param.input_shape:
        shapes = [list(s.dim) for s in param.input_shape]
        if len(shapes) not in (1, len(names)) and len(shapes) < len(names):
            raise ProtoError(
                f"{source}: {len(names)} legacy inputs but {len(shapes)} input shapes; give one "
                "shape per input")
    elif param.input_dim:
        dims = list(param.input_dim)
        if len(dims) < 4 * len(names):
            raise ProtoError(
                f"{source}: {len(names)} legacy inputs need 4 input_dim values each "
                f"({4 * len(names)}), got {len(dims)}")
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(names))]
        if len(dims) > 4 * len(names):
            LOG.warning("%s: %d input_dim values for %d inputs; the %d after the first %d are "
                        "ignored, as Caffe does", source, len(dims), len(names),
                        len(dims) - 4 * len(names), 4 * len(names))
    else:
        shapes = []
    if len(shapes) > len(names):
        LOG.warning("%s: %d input shapes for %d inputs; the last %d are ignored, as Caffe does",
                    source, len(shapes), len(names), len(shapes) - len(names))
    if shapes:
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        layer.top.extend(names)
        for i in range(len(names)):
            layer.input_param.shape.add().dim.extend(shapes[i if len(shapes) > 1 else 0])
        rest = list(param.layer)
        param.ClearField("layer")
        param.layer.append(layer)
        param.layer.extend(rest)
    param.ClearField("input")
    param.ClearField("input_shape")
    param.ClearField("input_dim")


def upgrade_net_batchnorm(param: caffe_pb2.NetParameter) -> None:
    """BatchNorm layers with three ``param`` entries: zero their lr_mult and decay_mult."""
    for lp in param.layer:
        if lp.type == "BatchNorm" and len(lp.param) == 3:
            for spec in lp.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


# ---------------------------------------------------------------------------- entry points
def upgrade_net_as_needed(param: caffe_pb2.NetParameter, source: str = "<net>",
                          problems: list[str] | None = None) -> bool:
    """Bring ``param`` to the current format in place; returns whether anything changed.

    Problems Caffe only logs are logged as warnings and appended to ``problems`` when given."""
    changed = False
    if net_needs_v0_upgrade(param):
        LOG.info("Upgrading V0LayerParameter net %s", source)
        upgrade_v0_net(param, source, problems)
        LOG.warning("%s uses the deprecated V0 net format; convert it once with "
                    "upgrade_net_proto_text (or upgrade_net_proto_binary for weights)", source)
        changed = True
    if net_needs_data_upgrade(param):
        LOG.info("Moving deprecated data transformation fields of %s into transform_param",
                 source)
        upgrade_net_data_transformation(param)
        changed = True
    if net_needs_v1_upgrade(param):
        LOG.info("Upgrading V1LayerParameter net %s", source)
        upgrade_v1_net(param, source, problems)
        changed = True
    if net_needs_input_upgrade(param):
        upgrade_net_input(param, source)
        changed = True
    if net_needs_batchnorm_upgrade(param):
        upgrade_net_batchnorm(param)
        changed = True
    return changed


def solver_needs_type_upgrade(param: caffe_pb2.SolverParameter) -> bool:
    return param.HasField("solver_type")


def upgrade_solver_as_needed(param: caffe_pb2.SolverParameter, source: str = "<solver>") -> bool:
    """Turn the deprecated ``solver_type`` enum into the ``type`` string, in place; returns
    whether anything changed. Both fields at once is an error, as in Caffe."""
    if not solver_needs_type_upgrade(param):
        return False
    name = caffe_pb2.SolverParameter.SolverType.Name(param.solver_type)
    if param.HasField("type"):
        raise SolverError(
            f"{source}: both the deprecated solver_type ({name}) and type "
            f"('{param.type}') are set; keep only type")
    LOG.info("Upgrading the deprecated solver_type of %s to type '%s'", source,
             _SOLVER_TYPES[param.solver_type])
    param.type = _SOLVER_TYPES[param.solver_type]
    param.ClearField("solver_type")
    return True


# ---------------------------------------------------------------------------- reading files
_TEXT_CONTROL = set(range(32)) - {9, 10, 11, 12, 13}


def _check_binary_net(param: caffe_pb2.NetParameter, path: str) -> None:
    """Bytes that are no protobuf at all often still decode as one made of unknown fields; a
    NetParameter with unknown fields and nothing known is not a NetParameter."""
    if len(unknown_fields.UnknownFieldSet(param)) and not param.ListFields():
        raise FileFormatError(
            f"{path}: neither a text nor a binary NetParameter (no prototxt syntax, and as "
            "binary it holds none of NetParameter's fields)")


def _parse_binary_net(data: bytes, path: str, text_error: ProtoError | None = None
                      ) -> caffe_pb2.NetParameter:
    param = caffe_pb2.NetParameter()
    try:
        param.ParseFromString(data)
    except (pb_message.DecodeError, ValueError, RuntimeError) as e:
        if text_error is not None:
            raise text_error from None
        raise FileFormatError(
            f"{path}: neither a text nor a binary NetParameter ({len(data)} bytes): it is not "
            f"UTF-8 text, and not valid protobuf wire format ({e})") from None
    files.repair_text(param, path)
    try:
        _check_binary_net(param, path)
    except FileFormatError:
        if text_error is not None:
            raise text_error from None
        raise
    return param


def read_net_file(path: str, strict: bool = True
                  ) -> tuple[caffe_pb2.NetParameter, dict[str, dict]]:
    """A NetParameter from ``path``, a prototxt or a binary file (told apart by content), as
    written (not upgraded), and the fields unknown to Caffe that tolerant parsing
    (``strict=False``) cut out, by layer name: ``{'up': {'upsample_param': {'scale': 2}}}``.
    Names survive the upgrades, which insert layers (the legacy Input) and so shift indices."""
    data = files._read_bytes(path, "NetParameter")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        try:
            return _parse_binary_net(data, path), {}
        except FileFormatError as binary_error:
            # text with stray bytes (a Latin-1 or GBK comment, which Caffe's parser skips)?
            text = data.decode("utf-8", "replace")
            try:
                param, extras = tolerant.parse_net_text(text, path, strict)
            except ProtoError:
                raise binary_error from None
            files.warn_not_utf8(path, data, e.start)
    else:
        try:
            param, extras = tolerant.parse_net_text(text, path, strict)
        except ProtoError as e:
            if not _TEXT_CONTROL.intersection(data):
                raise
            return _parse_binary_net(data, path, e), {}
    if not extras:
        return param, {}
    names = [name for _, _, name, _ in tolerant.enclosing_layers(text)]
    return param, {names[i]: fields for i, fields in extras.items() if i < len(names)}


def read_net_param(path: str, upgrade: bool = True, strict: bool = True,
                   problems: list[str] | None = None) -> caffe_pb2.NetParameter:
    """A NetParameter from ``path``, a prototxt or a binary file (told apart by content), in
    the current format unless ``upgrade`` is False (Caffe's ReadNetParamsFrom*FileOrDie).
    ``strict=False`` skips fields unknown to Caffe with a warning (nets from forks)."""
    param, _ = read_net_file(path, strict)
    if upgrade:
        upgrade_net_as_needed(param, path, problems)
    return param


def read_weights_param(path: str) -> caffe_pb2.NetParameter:
    """A binary caffemodel (current, V1 or V0 format). V0 layers are upgraded to V1, whose
    ``layers`` carry their names and blobs as current ``layer`` entries do."""
    data = files._read_bytes(path, "NetParameter")
    try:
        param = files.parse_binary(data, caffe_pb2.NetParameter(), path)
        _check_binary_net(param, path)
    except FileFormatError as e:
        looks_text = not _TEXT_CONTROL.intersection(data[:4096])
        hint = " It looks like a text file: is it a prototxt rather than a caffemodel?" \
            if looks_text else ""
        raise FileFormatError(f"{e}.{hint}") from None
    if net_needs_v0_upgrade(param):
        upgrade_v0_net(param, path)
    return param
