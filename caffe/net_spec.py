"""Nets written in Python, as pycaffe's ``caffe.net_spec``: ``caffe.layers`` (``L``) makes
layers, ``caffe.params`` (``P``) gives enum constants, ``caffe.NetSpec`` names the blobs, and
``to_proto`` writes the NetParameter (the same prototxt pycaffe writes for the same script).

    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[2, 3]), dict(dim=[2])], ntop=2)
    n.ip = L.InnerProduct(n.data, num_output=10, weight_filler=dict(type='xavier'))
    n.relu = L.ReLU(n.ip, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.ip, n.label)
    print(n.to_proto())

Keyword arguments: ``ntop`` (number of tops; 0 returns the layer itself), ``in_place`` (tops
reuse the bottoms' names); names ending in ``param`` go to the LayerParameter field of that
name (``transform_param=dict(scale=0.5)``, ``param=[dict(lr_mult=1), dict(lr_mult=2)]``); any
other name goes to the type's own ``<type>_param`` when it has that field, else to the
LayerParameter. Dicts become messages, lists become repeated fields, and a single value given
to a repeated field becomes a one-element list. Blob and layer names come from the NetSpec
attribute names; unnamed ones are ``<Type><count>``.
"""

from __future__ import annotations

import difflib
from collections import Counter, OrderedDict
from collections.abc import Iterator

from google.protobuf import message as pb_message

from caffe.errors import CaffeError, NetDefinitionError
from caffe.proto import caffe_pb2


class UnknownParamError(NetDefinitionError, AttributeError):
    """A NetSpec keyword names no field of the layer's parameter message nor of the layer."""


class ParamValueError(NetDefinitionError, TypeError):
    """A NetSpec keyword has a value its protobuf field cannot hold."""


class TopTypeError(CaffeError, TypeError):
    """A layer input is not a Top."""


class NoSuchTopError(CaffeError, KeyError, AttributeError):
    """A NetSpec has no top of that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def param_name_dict() -> dict[str, str]:
    """Layer type prefix -> field prefix of its parameter message, from the schema:
    ``ConvolutionParameter convolution_param`` gives ``'Convolution': 'convolution'``."""
    out = {}
    for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if f.name.endswith("_param") and f.message_type is not None:
            out[f.message_type.name[:-len("Parameter")]] = f.name[:-len("_param")]
    return out


_param_names = param_name_dict()
#: types whose parameters live in a message named after another type
_PARAM_ALIASES = {"Deconvolution": "convolution", "Im2col": "convolution",
                  "RNN": "recurrent", "LSTM": "recurrent"}


def _type_param_field(type_name: str) -> str | None:
    prefix = _param_names.get(type_name) or _PARAM_ALIASES.get(type_name)
    return f"{prefix}_param" if prefix else None


def assign_proto(proto: pb_message.Message, name: str, val, where: str = "") -> None:
    """Set field ``name`` of ``proto`` from a Python value: a dict fills a message, a list (or
    tuple) fills a repeated field, and a single value given to a repeated field is a one-element
    list. Errors name ``where`` (the layer), the field and the value."""
    desc = proto.DESCRIPTOR
    fd = desc.fields_by_name.get(name)
    prefix = f"{where}: " if where else ""
    if fd is None:
        fields = sorted(desc.fields_by_name)
        close = difflib.get_close_matches(name, fields, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise UnknownParamError(
            f"{prefix}{desc.name} has no field '{name}' (value {val!r}){hint} Its fields are: "
            f"{', '.join(fields)}")

    def bad(detail: str) -> ParamValueError:
        return ParamValueError(f"{prefix}{desc.name}.{name} {detail}, got {val!r}")

    if getattr(val, "ndim", 0) >= 1:  # a NumPy array is a list
        val = val.tolist()
    inner = f"{where} {name}" if where else name
    if fd.is_repeated:
        items = list(val) if isinstance(val, (list, tuple)) else [val]
        field = getattr(proto, name)
        if fd.message_type is not None:
            for item in items:
                _fill_message(field.add(), item, inner, bad)
            return
        try:
            field.extend(items)
        except (TypeError, ValueError) as e:
            raise bad(f"takes {_kind(fd)} or a list of them ({e})") from None
        return
    if isinstance(val, (list, tuple)):
        raise bad("takes a single value, not a list")
    if fd.message_type is not None:
        _fill_message(getattr(proto, name), val, inner, bad)
        return
    try:
        setattr(proto, name, val)
    except (TypeError, ValueError) as e:
        raise bad(f"takes {_kind(fd)} ({e})") from None


def _kind(fd) -> str:
    if fd.enum_type is not None:
        return f"a {fd.enum_type.name} value ({', '.join(v.name for v in fd.enum_type.values)})"
    return {fd.CPPTYPE_STRING: "a string", fd.CPPTYPE_BOOL: "a bool",
            fd.CPPTYPE_FLOAT: "a number", fd.CPPTYPE_DOUBLE: "a number"}.get(
        fd.cpp_type, "an integer")


def _fill_message(msg: pb_message.Message, val, where: str, bad) -> None:
    if isinstance(val, pb_message.Message) and val.DESCRIPTOR is msg.DESCRIPTOR:
        msg.CopyFrom(val)
    elif isinstance(val, dict):
        for k, v in val.items():
            assign_proto(msg, k, v, where)
    else:
        raise bad(f"is a {msg.DESCRIPTOR.name} message: give a dict of its fields")


class Top:
    """One output blob of a layer (``fn``): its ``n``-th top."""

    def __init__(self, fn: Function, n: int) -> None:
        self.fn = fn
        self.n = n

    def to_proto(self) -> caffe_pb2.NetParameter:
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames) -> None:
        self.fn._to_proto(layers, names, autonames)

    def __repr__(self) -> str:
        return f"<Top {self.n} of {self.fn.type_name}>"


class Function:
    """A layer: its type, its input Tops and its parameters (the keyword arguments)."""

    def __init__(self, type_name: str, inputs, params: dict) -> None:
        self.type_name = type_name
        for i, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TopTypeError(f"{type_name} input {i} is not a Top (type is {type(inp)})")
        self.inputs = inputs
        self.params = params
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _top_name(self, top: Top, names: dict, autonames: Counter) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = f"{top.fn.type_name}{autonames[top.fn.type_name]}"
        return names[top]

    def _name(self, names: dict, autonames: Counter) -> str:
        if self not in names:
            if self.ntop > 0:
                names[self] = self._top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = f"{self.type_name}{autonames[self.type_name]}"
        return names[self]

    def _to_proto(self, layers: OrderedDict, names: dict, autonames: Counter) -> None:
        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottoms.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._top_name(t, names, autonames) for t in self.tops)
        layer.name = self._name(names, autonames)
        where = f"layer '{layer.name}' ({self.type_name})"
        own = _type_param_field(self.type_name)
        for k, v in self.params.items():
            if k.endswith("param"):
                assign_proto(layer, k, v, where)
            elif own and k in getattr(layer, own).DESCRIPTOR.fields_by_name:
                assign_proto(getattr(layer, own), k, v, f"{where} {own}")
            elif k in layer.DESCRIPTOR.fields_by_name:
                assign_proto(layer, k, v, where)
            else:
                raise _unknown_param(where, k, v, own, layer)
        layers[self] = layer


def _unknown_param(where: str, key: str, value, own: str | None,
                   layer: caffe_pb2.LayerParameter) -> UnknownParamError:
    fields = list(layer.DESCRIPTOR.fields_by_name)
    if own:
        searched = f"{own} nor LayerParameter has"
        fields += list(getattr(layer, own).DESCRIPTOR.fields_by_name)
    else:
        searched = f"LayerParameter (there is no {layer.type}Parameter) has"
    close = difflib.get_close_matches(key, fields, n=3)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return UnknownParamError(
        f"{where}: unknown parameter {key}={value!r}: {'neither ' if own else ''}{searched} a "
        f"field '{key}'.{hint} Fields of another message go in <name>_param=dict(...)")


def to_proto(*tops: Top) -> caffe_pb2.NetParameter:
    """A NetParameter with every layer needed to compute ``tops`` (unnamed blobs and layers
    are named ``<Type><count>``)."""
    layers: OrderedDict = OrderedDict()
    autonames: Counter = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Named tops: assign ``n.<name> = L.<Type>(...)`` (or ``n['<name>']``); ``to_proto()``
    writes every layer needed for them, named after the attributes."""

    def __init__(self) -> None:
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name: str, value) -> None:
        self.tops[name] = value

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self.tops[name]
        except KeyError:
            raise NoSuchTopError(
                f"NetSpec has no top '{name}'; it has {list(self.tops)}") from None

    def __delattr__(self, name: str) -> None:
        del self[name]

    def __setitem__(self, key: str, value) -> None:
        self.__setattr__(key, value)

    def __getitem__(self, item: str):
        return self.__getattr__(item)

    def __delitem__(self, name: str) -> None:
        if name not in self.tops:
            raise NoSuchTopError(f"NetSpec has no top '{name}'; it has {list(self.tops)}")
        del self.tops[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tops

    def __iter__(self) -> Iterator[str]:
        return iter(self.tops)

    def keys(self) -> list[str]:
        return list(self.tops)

    def vals(self) -> list:
        return list(self.tops.values())

    def to_proto(self) -> caffe_pb2.NetParameter:
        names = {}
        for name, top in self.tops.items():
            if not isinstance(top, (Top, Function)):
                hint = (" (unpack a layer with several tops: n.a, n.b = L.X(..., ntop=2))"
                        if isinstance(top, tuple) else "")
                raise NetDefinitionError(
                    f"NetSpec entry '{name}' is a {type(top).__name__}, not a Top or a layer"
                    f"{hint}")
            names[top] = name
        autonames: Counter = Counter()
        layers: OrderedDict = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """``layers.<Type>(*bottoms, **params)`` specifies a layer of that type and returns its
    Top (a tuple of Tops when ``ntop`` > 1, the layer itself when ``ntop`` is 0)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops

        layer_fn.__name__ = name
        return layer_fn


class _EnumValues:
    """The enum constants of one ``<Name>Parameter`` message (``params.Pooling.MAX``)."""

    def __init__(self, name: str, message) -> None:
        self._name = name
        self._message = message

    def __getattr__(self, value: str):
        if value.startswith("__"):
            raise AttributeError(value)
        try:
            return getattr(self._message, value)
        except AttributeError:
            values = [v.name for e in self._message.DESCRIPTOR.enum_types for v in e.values]
            raise UnknownParamError(
                f"caffe.params.{self._name} has no constant '{value}'; "
                f"{self._name}Parameter defines: {', '.join(values) or 'none'}") from None


class Parameters:
    """``params.<Name>.<CONSTANT>`` is the enum value ``<Name>Parameter.<CONSTANT>``."""

    def __getattr__(self, name: str) -> _EnumValues:
        if name.startswith("__"):
            raise AttributeError(name)
        message = getattr(caffe_pb2, name + "Parameter", None)
        if message is None:
            known = sorted(n[:-len("Parameter")] for n in dir(caffe_pb2)
                           if n.endswith("Parameter") and not n.startswith("V"))
            raise UnknownParamError(
                f"caffe.params has no '{name}': caffe.proto defines no {name}Parameter. "
                f"Known: {', '.join(known)}")
        return _EnumValues(name, message)


layers = Layers()
params = Parameters()
