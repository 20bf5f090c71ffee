"""Reading the course layout into Detectron2 datasets: reader, cache, catalog, mapper."""

from .catalog import register_cells, register_cells_splits
from .image_io import DatasetError, read_image, read_mask

__all__ = ["DatasetError", "read_image", "read_mask", "register_cells", "register_cells_splits"]
