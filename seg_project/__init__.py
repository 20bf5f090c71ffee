"""seg_project: a Detectron2 project for instance segmentation of cells.

Importing the package is light: it does not import Detectron2 or torch. It arranges that the
predefined datasets (cells_train, cells_val, cells_trainval, cells_test and one per annotated
folder, see :mod:`seg_project.data.catalog`) for ``$DETECTRON2_DATASETS/cells`` are registered
as soon as ``detectron2.data`` is imported (at once if it already is), and that
``CellsRPN`` is registered as soon as ``detectron2.modeling`` is; configs re-register the
datasets for their own ``DATASETS.CELLS.ROOT`` (see
:func:`seg_project.config.register_datasets_from_config`).

Its packages and modules, from the ground floor up (a module imports only from its own floor
or lower ones; ``tests/test_layout.py`` checks it):

- :mod:`.utils` (errors, the tools' error style, run-folder file names...) and
  :mod:`.modeling` (``CellsRPN``);
- :mod:`.data`: the course layout read into Detectron2 datasets;
- :mod:`.config` (keys, the one config loader, checks) and :mod:`.checkpoint` (weights,
  resume points);
- :mod:`.submission` (``test-results.json``) and :mod:`.export` (GeoJSON, label TIFFs);
- :mod:`.inference`: predictions from images;
- :mod:`.evaluation` (numbers about predictions) and :mod:`.visualization` (pictures);
- :mod:`.analysis`: finished runs (curves, summaries, the HTML report);
- :mod:`.engine`: training.

``_lazy_registration`` runs the registrations above when Detectron2 is imported.
"""

import warnings

from ._lazy_registration import after_import

# Detectron2 v0.6 scripts a few functions at import; torch >= 2.10 deprecates torch.jit.script.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                        category=FutureWarning)

__version__ = "0.1.0"
__all__ = ["add_seg_project_config", "get_seg_project_cfg"]


def _register_datasets() -> None:
    # Importing the catalog registers the predefined datasets; when it is being imported
    # right now (it imports detectron2.data), it registers them at its end.
    import sys

    if f"{__name__}.data.catalog" not in sys.modules:
        from .data import catalog  # noqa: F401


def _register_models() -> None:
    from . import modeling  # noqa: F401  (registers MODEL.PROPOSAL_GENERATOR CellsRPN)


after_import("detectron2.data", _register_datasets)
after_import("detectron2.modeling", _register_models)


def __getattr__(name):
    # The config helpers import Detectron2, so they are loaded when first used.
    if name in __all__:
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'seg_project' has no attribute {name!r}")
