"""seg_project: a Detectron2 project for instance segmentation of cells.

Importing the package registers the predefined datasets (cells_train, cells_val,
cells_trainval, cells_test) for ``$DETECTRON2_DATASETS/cells``; configs re-register them for
their own ``DATASETS.CELLS.ROOT`` (see :func:`seg_project.config.register_datasets_from_config`).
"""

import warnings

# Detectron2 v0.6 scripts a few functions at import; torch >= 2.10 deprecates torch.jit.script.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                        category=FutureWarning)

from .config import add_seg_project_config, get_seg_project_cfg  # noqa: E402
from .data import catalog as _catalog  # noqa: E402
from .modeling import CellsRPN  # noqa: E402, F401  (registers MODEL.PROPOSAL_GENERATOR CellsRPN)

_catalog.register_cells_splits()

__version__ = "0.1.0"
__all__ = ["add_seg_project_config", "get_seg_project_cfg"]
