"""Numbers about predictions: COCO AP during training and evaluation (:mod:`.coco`)."""
