"""Evaluation helpers: COCO evaluation during training (:mod:`.coco`), the submission writer
and checker (:mod:`.submission`), and telling bbox formats apart (:mod:`.bbox_format`)."""
