"""Upgrades of old Caffe net and solver descriptions to the current format.

Only the legacy net-input fields are handled here so far: ``input`` / ``input_shape`` /
``input_dim`` become an ``Input`` layer.
"""

from __future__ import annotations

from caffe.errors import ProtoError
from caffe.proto import caffe_pb2


def net_needs_input_upgrade(param: caffe_pb2.NetParameter) -> bool:
    return len(param.input) > 0


def upgrade_net_input(param: caffe_pb2.NetParameter, source: str = "<net>") -> None:
    """Replace legacy ``input`` + ``input_shape``/``input_dim`` by a leading Input layer."""
    names = list(param.input)
    if param.input_shape:
        shapes = [list(s.dim) for s in param.input_shape]
    elif param.input_dim:
        dims = list(param.input_dim)
        if len(dims) != 4 * len(names):
            raise ProtoError(
                f"{source}: {len(names)} legacy inputs need 4 input_dim values each "
                f"({4 * len(names)}), got {len(dims)}")
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(names))]
    else:
        shapes = []
    if shapes and len(shapes) not in (1, len(names)):
        raise ProtoError(
            f"{source}: {len(names)} legacy inputs but {len(shapes)} input shapes; give one "
            "shape per input")
    layer = caffe_pb2.LayerParameter(name="input", type="Input")
    layer.top.extend(names)
    for i in range(len(names)):
        if shapes:
            layer.input_param.shape.add().dim.extend(shapes[i if len(shapes) > 1 else 0])
    rest = [caffe_pb2.LayerParameter.FromString(lp.SerializeToString()) for lp in param.layer]
    param.ClearField("layer")
    param.layer.append(layer)
    param.layer.extend(rest)
    param.ClearField("input")
    param.ClearField("input_shape")
    param.ClearField("input_dim")


def upgrade_net_as_needed(param: caffe_pb2.NetParameter, source: str = "<net>") -> bool:
    """Bring ``param`` to the current format in place; returns whether anything changed."""
    changed = False
    if param.layers:
        raise ProtoError(
            f"{source}: this net uses the V1 'layers' format, which this version cannot "
            "upgrade yet")
    if net_needs_input_upgrade(param):
        upgrade_net_input(param, source)
        changed = True
    return changed
