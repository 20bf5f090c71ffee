"""Numbers about predictions, one job per module:

- :mod:`.coco`: COCO AP, the grader's exact figures and the same at a high detection cap;
- :mod:`.pathology`: PQ, SQ, DQ, AJI, AJI+, Dice, F1 and mPQ on instance maps;
- :mod:`.predictions`: every number about one set of predictions, and their tables;
- :mod:`.evaluator`: the Detectron2 evaluator of training and ``--eval-only``;
- :mod:`.results_file`: a results file scored against annotated data (``tools/evaluate.py``);
- :mod:`.confusion`: the class confusion of matched instances (the run report);
- :mod:`.operating_point`: the score threshold of highest PQ, chosen on an evaluated split.

Import the modules themselves: this package imports nothing.
"""
