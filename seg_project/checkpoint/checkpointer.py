"""A checkpointer that never leaves a half-written file and explains weights that do not fit."""

import os
import re
from typing import Dict, Mapping, Optional
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts

from ..utils.atomic_files import atomic_write, write_text
from ..utils.errors import WeightsError
from ..utils.run_files import FINAL_MODEL, LAST_CHECKPOINT_FILE, PERIODIC_CHECKPOINT_RE
from .fit import (
    PREDICTOR_LAYERS,
    check_predictors,
    classes_phrase,
    layer_name,
    strip_module_prefix,
)
from .safe_load import read_weights_file

__all__ = [
    "CellsCheckpointer",
    "WeightsNotFoundError",
    "read_weights",
]

_MAX_LISTED = 12


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """MODEL.WEIGHTS names a file that does not exist or cannot be downloaded."""


def _short(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's go on for paragraphs)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    text = re.split(r"(?<=[a-z)])\. ", text, maxsplit=1)[0].rstrip(".")
    return text if len(text) <= 200 else text[:197] + "..."


def _format_problem(path: str) -> Optional[str]:
    """Why a file cannot be a checkpoint, from its first bytes (None if it might be one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return None  # a PyTorch zip archive, or a pickle (legacy .pth, Detectron2 .pkl)
    return "neither a PyTorch checkpoint (zip archive) nor a pickle"


def _as_checkpoint(data, filename: str):
    """Detectron2's checkpoint layout of what a weights file holds, as
    ``DetectionCheckpointer._load_file`` lays it out: a ``.pkl`` of the model zoo as it is,
    other ``.pkl`` files as Caffe2 / Detectron1 blobs, a ``.pyth`` as pycls's
    ``model_state``, and a bare state dict under ``"model"``."""
    if not isinstance(data, dict):
        return data
    if filename.endswith(".pkl"):
        if "model" in data and "__author__" in data:
            return data
        blobs = data.get("blobs", data)
        if not isinstance(blobs, dict):
            return blobs
        return {"model": {k: v for k, v in blobs.items() if not str(k).endswith("_momentum")},
                "__author__": "Caffe2", "matching_heuristics": True}
    if filename.endswith(".pyth"):
        if not isinstance(data.get("model_state"), dict):
            raise WeightsError(filename, "holds no model_state: not a pycls checkpoint")
        return {"model": {k: v for k, v in data["model_state"].items()
                          if not str(k).endswith("num_batches_tracked")},
                "__author__": "pycls", "matching_heuristics": True}
    return data if "model" in data else {"model": data}


class _RecordedWrites:
    """A file for ``torch.save`` that keeps the ``OSError`` of a failed write (a full disk):
    torch reports it as a ``RuntimeError`` about stream positions."""

    def __init__(self, file):
        self._file = file
        self.error: Optional[OSError] = None

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self._file.flush()


def _torch_save(data, path: str) -> None:
    """``torch.save(data, path)``; a failed write raises its ``OSError`` (e.g. ENOSPC)."""
    with open(path, "wb") as f:
        stream = _RecordedWrites(f)
        try:
            torch.save(data, stream)
        except RuntimeError:
            if stream.error is None:
                raise
            raise stream.error from None


def read_weights(path: str) -> Dict:
    """Read a weights or checkpoint file as Detectron2 would (``.pth``, ``.pkl``), without a
    model; a URL is downloaded (or taken from the download cache) first.

    Returns:
        dict: the checkpoint (``"model"``: the state dict, and any other saved entries).

    Raises:
        WeightsNotFoundError: missing file or failed download.
        WeightsError: not readable as a checkpoint (corrupt, truncated, another format).
    """
    checkpointer = CellsCheckpointer(torch.nn.Module())
    local = checkpointer._local_weights(path)
    return checkpointer._load_file(local)



class CellsCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic saves and clear errors about weights files.

    - ``save`` writes to a temporary file in the same folder and renames it into place, then
      updates ``last_checkpoint`` the same way: a run killed while saving keeps its previous
      checkpoint and a ``last_checkpoint`` that points to a complete file.
    - ``save(..., tag_last=False)`` writes a checkpoint (e.g. ``model_best``) without making it
      the one ``--resume`` continues from.
    - ``load`` of a missing local file, or of a URL that cannot be fetched (offline), raises
      :class:`WeightsNotFoundError` naming it; a file that is not a readable checkpoint
      (corrupt, truncated, another format) raises :class:`WeightsError` naming it.
    - :meth:`load_for_inference` (and ``load(..., require_fit=...)``) refuses weights whose box
      or mask predictors do not fit the model's classes. Plain ``load`` (training from another
      task's weights, e.g. COCO's 80 classes) logs one line listing the layers that start
      fresh.
    - ``--resume`` continues from the newest training checkpoint: ``model_final.pth``, else
      the highest-numbered ``model_<iter>.pth`` (every one on disk is complete), so a kill
      between writing a checkpoint and updating ``last_checkpoint`` loses nothing; a
      ``last_checkpoint`` naming a file outside the run folder is refused.
    - Every file is read without running code it may hold (:mod:`.safe_load`).
    """

    _loading: str = ""
    _require_fit: Optional[str] = None

    def save(self, name: str, tag_last: bool = True, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_write(path, lambda temp: _torch_save(data, temp))
        if tag_last:
            self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        write_text(os.path.join(self.save_dir, LAST_CHECKPOINT_FILE), last_filename_basename)

    def get_checkpoint_file(self) -> str:
        names = os.listdir(self.save_dir) if os.path.isdir(self.save_dir) else []
        if f"{FINAL_MODEL}.pth" in names:
            return os.path.join(self.save_dir, f"{FINAL_MODEL}.pth")
        periodic = sorted(n for n in names if PERIODIC_CHECKPOINT_RE.match(n))
        if periodic:
            return os.path.join(self.save_dir, periodic[-1])
        tag = os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        try:
            with open(tag, encoding="utf-8") as f:
                name = f.read().strip()
        except (OSError, UnicodeDecodeError):
            return ""
        if os.path.dirname(name) or name in (".", ".."):
            raise WeightsError(tag, f"names {name[:200]!r}, which is not a file of this run "
                                    "folder: --resume continues only from the run's own "
                                    "checkpoints (to start from other weights, train a new "
                                    "run with MODEL.WEIGHTS)")
        return os.path.join(self.save_dir, name)

    def has_checkpoint(self) -> bool:
        return super().has_checkpoint() or os.path.isfile(self.get_checkpoint_file())

    def load(self, path: str, *args, require_fit: Optional[str] = None, **kwargs):
        """Load ``path`` into the model (and the checkpointables).

        Args:
            path: a file or URL; "" loads nothing.
            require_fit: if given (what the config asks for, see :func:`config_asks`), refuse
                weights whose predictor layers do not fit the model.
            *args, **kwargs: as for ``DetectionCheckpointer.load`` (``checkpointables``).

        Raises:
            WeightsNotFoundError: missing file or failed download.
            WeightsError: unreadable file, weights of another model, or (``require_fit``)
                predictors that do not fit.
        """
        if path:
            path = self._local_weights(path)
        self._loading, self._require_fit = path, require_fit
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading, self._require_fit = "", None

    def load_for_inference(self, path: str, asks: Optional[str] = None) -> Dict:
        """Load weights to predict or evaluate with: the box and mask predictors must fit.

        Args:
            path: the weights file or URL.
            asks: what the config asks for, for the error (default: the model's class count).

        Raises:
            WeightsError: no ``path``, an unreadable file, or predictors that are missing or
                of another class count (naming the file, what it holds and what is asked).
        """
        if not path:
            raise WeightsError("MODEL.WEIGHTS", "no weights file given: predicting or "
                                                "evaluating needs trained weights")
        if asks is None:
            k = getattr(getattr(self.model, "roi_heads", None), "num_classes", "?")
            asks = classes_phrase(k)
        return self.load(path, checkpointables=[], require_fit=asks)

    def _local_weights(self, path: str) -> str:
        if os.path.isfile(path):
            return path
        scheme = urlparse(path).scheme
        if scheme in ("", "file"):
            raise WeightsNotFoundError(path, "MODEL.WEIGHTS file not found")
        try:
            return self.path_manager.get_local_path(path)
        except Exception as e:
            raise WeightsNotFoundError(
                path,
                f"could not be downloaded ({type(e).__name__}: {e}). Offline? Download it on a "
                "machine with internet access and set MODEL.WEIGHTS to the local file, or set "
                "MODEL.WEIGHTS \"\" to start from random weights."
            ) from None

    def _load_file(self, filename: str):
        """Read a weights file without running code it holds (:mod:`.safe_load`) into
        Detectron2's checkpoint layout (``{"model": state, ...}``)."""
        if os.path.isfile(filename) and os.path.getsize(filename) == 0:
            raise WeightsError(filename, "is empty (0 bytes): not a weights file")
        try:
            checkpoint = _as_checkpoint(read_weights_file(filename), filename)
        except WeightsError:
            raise
        except Exception as e:  # noqa: BLE001 - torch and pickle raise many kinds here
            detail = _format_problem(filename) or _short(e)
            if detail.startswith("Weights only load failed"):
                detail = ("it holds Python objects other than tensors and plain values, which "
                          "torch.load(weights_only=True) refuses to unpickle")
            raise WeightsError(filename, f"cannot be read as a weights file (corrupt, truncated "
                                         f"or not a checkpoint): {detail}") from e
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), Mapping):
            raise WeightsError(filename, "holds no model weights (not a checkpoint)")
        if "__author__" in checkpoint and not checkpoint.get("matching_heuristics"):
            self.logger.info(f"Reading a file from '{checkpoint['__author__']}'")
        return checkpoint

    def fitted_state(self, checkpoint: Dict, path: str,
                     require_fit: Optional[str] = None) -> Dict:
        """Check a checkpoint (as :meth:`_load_file` returns it) against this model before
        loading it; also what ``plan_run`` calls, with a model on the meta device, before
        anything is written.

        Caffe2 / pycls weights are first renamed to the model's names, in place, as Detectron2
        does while loading.

        Args:
            checkpoint: the checkpoint dict.
            path: the file, named in errors.
            require_fit: if given (what the config asks for, see :func:`config_asks`), the
                box and mask predictors must fit the model.

        Returns:
            dict: the checkpoint's model state under the model's names.

        Raises:
            WeightsError: none of the model's weights are in the file, or (``require_fit``)
                its predictors do not fit.
        """
        if checkpoint.get("matching_heuristics", False):
            self._convert_ndarray_to_tensor(checkpoint["model"])
            checkpoint["model"] = align_and_update_state_dicts(
                self.model.state_dict(), checkpoint["model"],
                c2_conversion=checkpoint.get("__author__", None) == "Caffe2")
            checkpoint["matching_heuristics"] = False
        state = strip_module_prefix(checkpoint["model"])
        model_state = self.model.state_dict()
        if model_state and not set(state) & set(model_state):
            example = ", ".join(list(state)[:3]) or "nothing"
            raise WeightsError(path, f"holds none of this model's weights (it has "
                                     f"{len(state)} tensors, e.g. {example}): weights of "
                                     "another kind of model")
        if require_fit is not None:
            expected = {key: tuple(model_state[key].shape)
                        for key in (f"{layer}.weight" for layer in PREDICTOR_LAYERS)
                        if key in model_state}
            check_predictors(state, expected, path, require_fit)
        return state

    def _load_model(self, checkpoint):
        path = self._loading or "the checkpoint"
        self.fitted_state(checkpoint, path, self._require_fit)
        try:
            return super()._load_model(checkpoint)
        except ValueError as e:  # e.g. "Unsupported type found in checkpoint!"
            raise WeightsError(path, f"is not a weights file of this model: {_short(e)}") from e

    def _log_incompatible_keys(self, incompatible) -> None:
        """One line for the layers that start fresh, one for unused tensors (instead of
        Detectron2's warning per tensor)."""
        path = self._loading or "the checkpoint"
        fresh: Dict[str, str] = {}
        for key, shape_file, shape_model in incompatible.incorrect_shapes:
            if shape_file[:1] != shape_model[:1] and shape_file[1:] == shape_model[1:]:
                note = f"{shape_file[0]} outputs in the file, {shape_model[0]} here"
            else:
                note = f"shape {list(shape_file)} in the file, {list(shape_model)} here"
            fresh.setdefault(layer_name(key), note)
        missing = list(incompatible.missing_keys)
        try:
            from fvcore.common.checkpoint import _filter_reused_missing_keys

            missing = _filter_reused_missing_keys(self.model, missing)
        except ImportError:
            pass
        for key in missing:
            fresh.setdefault(layer_name(key), "not in the file")
        if fresh:
            layers = [f"{layer} ({note})" for layer, note in fresh.items()]
            more = (f" and {len(layers) - _MAX_LISTED} more" if len(layers) > _MAX_LISTED
                    else "")
            self.logger.info(f"Layers that start fresh, not loaded from {path}: "
                             f"{'; '.join(layers[:_MAX_LISTED])}{more}")
        unexpected = list(incompatible.unexpected_keys)
        if unexpected:
            layers = sorted({layer_name(k) for k in unexpected})
            more = (f" and {len(layers) - _MAX_LISTED} more" if len(layers) > _MAX_LISTED
                    else "")
            self.logger.info(f"Layers of {path} this model does not use: "
                             f"{', '.join(layers[:_MAX_LISTED])}{more}")
