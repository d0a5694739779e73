"""Layer type registry: Caffe type name (``"Convolution"``) -> layer class.

A layer module registers its class with ``@register_layer("TypeName")``; the same decorator is
public (``caffe.register_layer``) so users can supply implementations for types that BVLC Caffe
never had (fork layers such as ``Upsample``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from caffe.errors import UnknownLayerTypeError

if TYPE_CHECKING:
    from caffe.layer import Layer

_REGISTRY: dict[str, type[Layer]] = {}


def register_layer(type_name: str) -> Callable[[type[Layer]], type[Layer]]:
    """Class decorator: make ``type_name`` in a prototxt build this class.

    Registering a name twice replaces the earlier class (so a user may override a built-in)."""

    def deco(cls: type[Layer]) -> type[Layer]:
        from caffe.errors import CaffeError
        from caffe.layer import Layer

        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise CaffeError(
                f"register_layer('{type_name}') needs a class derived from caffe.Layer, got "
                f"{cls!r}")
        cls.type_name = type_name
        _REGISTRY[type_name] = cls
        return cls

    return deco


def layer_class(type_name: str, layer_name: str = "?") -> type[Layer]:
    """The class registered for ``type_name``; raises UnknownLayerTypeError listing known types."""
    try:
        return _REGISTRY[type_name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownLayerTypeError(
            f"Layer '{layer_name}' has unknown type '{type_name}'. Known types: {known}. "
            "To supply your own implementation, decorate a Python layer class with "
            f"@caffe.register_layer('{type_name}')."
        ) from None


def layer_type_list() -> list[str]:
    """All layer type names a net may use, sorted (pycaffe's ``caffe.layer_type_list()``):
    the registered classes and ``Python``, whose class each layer names in its
    ``python_param``."""
    return sorted([*_REGISTRY, "Python"])
