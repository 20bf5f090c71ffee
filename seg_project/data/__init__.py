"""Reading the course layout into Detectron2 datasets, one job per module:

- :mod:`.image_io`: images and masks from files, with clear errors (:class:`DatasetError`);
- :mod:`.intensity`: the one rule that maps a dataset's 16-bit and float images to ``uint8``;
- :mod:`.reader`: the course layout (train folders, test folder, mapping file) as records;
- :mod:`.cache`: converted records cached outside the data;
- :mod:`.rle`: the RLE codec of mask crops;
- :mod:`.catalog`: the Detectron2 datasets (cells_train, cells_val, ...);
- :mod:`.mapper`, :mod:`.cropped_masks`: records to model inputs, fast;
- :mod:`.resize`: short-side or fixed-scale resizing (``INPUT.RESIZE_MODE``);
- :mod:`.augmentations`: orientations, stain and colour jitter for training;
- :mod:`.stats`: dataset statistics, and the intensity rule computed from training images;
- :mod:`.synthetic`: generated datasets in the course layout;
- :mod:`.instance_map`: an image's cells as one instance map, under the overlap rule (the one
  painter of the pathology metrics, the exports, the pictures and the report);
- :mod:`.score_threshold`: which score threshold makes a detection a cell (the run's
  operating point, ``operating_point.json``).

Import the modules themselves: this package imports nothing, so that tools which need no
model (statistics, synthetic data) start without Detectron2.
"""
