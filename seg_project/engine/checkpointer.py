"""A checkpointer that never leaves a half-written file and explains missing weights."""

import os
import re
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..atomic_files import atomic_write, write_text

__all__ = ["CellsCheckpointer", "WeightsNotFoundError"]

_PERIODIC_RE = re.compile(r"^model_(\d{7})\.pth$")


class WeightsNotFoundError(FileNotFoundError):
    """MODEL.WEIGHTS names a file that does not exist or cannot be downloaded."""


class CellsCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic saves and clear errors for missing weights.

    - ``save`` writes to a temporary file in the same folder and renames it into place, then
      updates ``last_checkpoint`` the same way: a run killed while saving keeps its previous
      checkpoint and a ``last_checkpoint`` that points to a complete file.
    - ``save(..., tag_last=False)`` writes a checkpoint (e.g. ``model_best``) without making it
      the one ``--resume`` continues from.
    - ``load`` of a missing local file, or of a URL that cannot be fetched (offline), raises
      :class:`WeightsNotFoundError` naming it.
    - ``--resume`` continues from the newest training checkpoint: ``model_final.pth``, else
      the highest-numbered ``model_<iter>.pth`` (every one on disk is complete), so a kill
      between writing a checkpoint and updating ``last_checkpoint`` loses nothing.
    """

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
        atomic_write(path, lambda temp: torch.save(data, temp))
        if tag_last:
            self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def get_checkpoint_file(self) -> str:
        names = os.listdir(self.save_dir) if os.path.isdir(self.save_dir) else []
        if "model_final.pth" in names:
            return os.path.join(self.save_dir, "model_final.pth")
        periodic = sorted(n for n in names if _PERIODIC_RE.match(n))
        if periodic:
            return os.path.join(self.save_dir, periodic[-1])
        return super().get_checkpoint_file()

    def has_checkpoint(self) -> bool:
        return super().has_checkpoint() or os.path.isfile(self.get_checkpoint_file())

    def load(self, path: str, *args, **kwargs):
        if path:
            path = self._local_weights(path)
        return super().load(path, *args, **kwargs)

    def _local_weights(self, path: str) -> str:
        if os.path.isfile(path):
            return path
        scheme = urlparse(path).scheme
        if scheme in ("", "file"):
            raise WeightsNotFoundError(f"MODEL.WEIGHTS file not found: {path}")
        try:
            return self.path_manager.get_local_path(path)
        except Exception as e:
            raise WeightsNotFoundError(
                f"MODEL.WEIGHTS {path} could not be downloaded ({type(e).__name__}: {e}). "
                "Offline? Download it on a machine with internet access and set MODEL.WEIGHTS "
                "to the local file, or set MODEL.WEIGHTS \"\" to start from random weights."
            ) from None
