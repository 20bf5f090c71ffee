"""Evaluation helpers: the submission writer and checker (:mod:`.submission`)."""
