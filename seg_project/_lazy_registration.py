"""Run a callback once a module has been imported, without importing it.

``import seg_project`` must stay light (no Detectron2, no torch), yet users who import the
package and then call Detectron2 expect the cells_* datasets and ``CellsRPN`` to be
registered. :func:`after_import` arranges that: it runs the callback at once if the module is
already imported, else right after its first import completes.
"""

import importlib.abc
import importlib.util
import sys
from typing import Callable, Dict, List

__all__ = ["after_import"]

_pending: Dict[str, List[Callable[[], None]]] = {}


class _Loader(importlib.abc.Loader):
    """Wraps a module's real loader and runs the callbacks after it has executed it."""

    def __init__(self, loader, name: str):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        for callback in _pending.pop(self._name, []):
            callback()

    def __getattr__(self, attr):
        return getattr(self._loader, attr)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself; gives the watched modules' specs a wrapping loader."""

    def find_spec(self, name, path, target=None):
        if name not in _pending:
            return None
        sys.meta_path.remove(self)  # let the other finders find the real spec
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader, name)
        return spec


_FINDER = _Finder()


def after_import(module: str, callback: Callable[[], None]) -> None:
    """Call ``callback()`` once ``module`` is imported: now if it already is, else just
    after its first import finishes."""
    if module in sys.modules:
        callback()
        return
    _pending.setdefault(module, []).append(callback)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
