"""Reading a weights file without running any code it holds.

A pickle names functions to call while it is read (``os.system``, ``builtins.eval``...), so
unpickling a file from elsewhere can run anything. Every weights file the project reads goes
through :func:`read_weights_file`:

- ``.pkl`` (Detectron2's model zoo: a dict of numpy arrays; Caffe2 / Detectron1 blobs) through
  :class:`WeightsUnpickler`, which builds numpy arrays, numpy scalars and dtypes, plain Python
  containers and ``collections.OrderedDict``, and refuses any other global, naming it;
- every other file (``.pth``, ``.pyth``...) through ``torch.load(weights_only=True)``, given
  explicitly so that ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off.

A user's own legacy file that holds other objects can be trusted explicitly: list it in the
environment variable ``SEG_PROJECT_TRUSTED_WEIGHTS`` (paths separated by ``:``); it is then
read with the unrestricted ``pickle`` / ``torch.load(weights_only=False)``, which runs whatever
code the file holds. That is unsafe: do it only for files you made yourself.
"""

import logging
import os
import pickle
import re
from typing import Any, Dict, Tuple

from ..utils.errors import WeightsError

__all__ = ["TRUSTED_WEIGHTS_ENV", "WeightsUnpickler", "is_trusted", "read_weights_file"]

logger = logging.getLogger(__name__)

# The environment variable that lists weights files read with the unrestricted unpickler.
TRUSTED_WEIGHTS_ENV = "SEG_PROJECT_TRUSTED_WEIGHTS"

# The builtins a pickle of plain containers may name (protocols 0-2 build these by name;
# Python 2 pickles call the module __builtin__, and protocol 2 writes bytes via _codecs).
_PLAIN_GLOBALS = {
    (module, name)
    for module in ("builtins", "__builtin__")
    for name in ("set", "frozenset", "complex", "bytearray", "slice")
} | {("_codecs", "encode"), ("collections", "OrderedDict")}


def _numpy_globals() -> Dict[Tuple[str, str], Any]:
    """The numpy globals a pickle of arrays names, under numpy 1 and numpy 2 module names."""
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 1.26
        from numpy.core import multiarray
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global that :class:`WeightsUnpickler` does not build."""

    def __init__(self, module: str, name: str):
        self.global_name = f"{module}.{name}"
        super().__init__(f"refuses to load {self.global_name}")


class WeightsUnpickler(pickle.Unpickler):
    """An unpickler for weights files: numpy arrays, scalars and dtypes, plain containers
    (dict, list, tuple, set, str, bytes, numbers) and ``collections.OrderedDict``; any other
    global raises :class:`RefusedGlobal` before anything of it is imported or called."""

    _numpy = None

    def find_class(self, module: str, name: str):
        if (module, name) in _PLAIN_GLOBALS:
            return super().find_class(module, name)
        if WeightsUnpickler._numpy is None:
            WeightsUnpickler._numpy = _numpy_globals()
        found = WeightsUnpickler._numpy.get((module, name))
        if found is None:
            raise RefusedGlobal(module, name)
        return found


def is_trusted(path: str) -> bool:
    """Whether ``path`` is listed in ``SEG_PROJECT_TRUSTED_WEIGHTS`` (same file, resolved)."""
    listed = os.environ.get(TRUSTED_WEIGHTS_ENV, "")
    real = os.path.realpath(path)
    return any(os.path.realpath(item) == real for item in listed.split(os.pathsep) if item)


_ONLY = {
    "pickle": "a .pkl weights file may hold only numpy arrays and plain Python containers",
    "torch": "torch.load(weights_only=True) reads only tensors and plain Python containers",
}


def _refusal(path: str, global_name: str, reader: str) -> WeightsError:
    return WeightsError(path, f"refuses to load {global_name} ({_ONLY[reader]}: reading "
                              "anything else can run code). If you made this file yourself "
                              f"and trust it, set {TRUSTED_WEIGHTS_ENV}={path} (unsafe: it "
                              "runs whatever the file holds)")


_TORCH_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def read_weights_file(path: str) -> Any:
    """What a local weights file holds, read without running code (unless it is trusted).

    Args:
        path: a ``.pkl`` file (pickle, read with latin-1 strings as Detectron2 does) or any
            file ``torch.load`` reads.

    Returns:
        the unpickled object (normally a dict).

    Raises:
        WeightsError: the file names a global that the safe readers refuse (naming it).
        Exception: whatever pickle or torch raise for a corrupt file (the caller words it).
    """
    trusted = is_trusted(path)
    if trusted:
        logger.warning(f"Reading {path} with the unrestricted unpickler ({TRUSTED_WEIGHTS_ENV}): "
                       "any code it holds runs")
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            if trusted:
                return pickle.load(f, encoding="latin1")
            try:
                return WeightsUnpickler(f, encoding="latin1").load()
            except RefusedGlobal as e:
                raise _refusal(path, e.global_name, "pickle") from None
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as e:
        found = _TORCH_GLOBAL.search(str(e))
        if found and not trusted:
            raise _refusal(path, found.group(1).rstrip("."), "torch") from None
        raise
