"""Everything about a run's ``metrics.json``: reading runs (:mod:`.curves`), plotting their
curves (:mod:`.plots`) and summarising their best and final metrics (:mod:`.summary`).

Import the modules themselves: this package imports nothing (matplotlib is loaded only by
:mod:`.plots`)."""
