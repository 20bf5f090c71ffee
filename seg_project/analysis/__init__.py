"""Everything about finished runs, read from their run folders:

- :mod:`.curves`: ``metrics.json`` (and ``config.yaml``) read into series;
- :mod:`.plots`: the curves as PNG figures;
- :mod:`.summary`: the best and final value of a metric per run (Markdown, CSV);
- :mod:`.report`: the run's one-page HTML report, made of :mod:`.report_sections` (settings,
  curves, final metrics), :mod:`.report_dataset` (class confusion, best and worst images)
  and :mod:`.report_html` (escaping, tables, embedded pictures, the page).

Import the modules themselves: this package imports nothing (matplotlib is loaded only by
:mod:`.plots`)."""
