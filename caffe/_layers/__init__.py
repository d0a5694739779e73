"""Built-in layers: one module per Caffe type, grouped by family. Importing this package
imports every module, and each registers its class with ``@register_layer``."""

import importlib
import pkgutil


def _import_all() -> None:
    for info in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
        importlib.import_module(info.name)


_import_all()
