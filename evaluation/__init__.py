"""Evaluating searches: compare agents on the same budget and seeds, and report on finished runs.

- :mod:`evaluation.compare`: ``nas compare``, many (agent, seed) searches in parallel processes;
- :mod:`evaluation.report`: the comparison's tables and curves, and ``nas report`` for one run directory;
- :mod:`evaluation.traces`: a finished search read back from its store (told order, pick, curves);
- :mod:`evaluation.curves`, :mod:`evaluation.plots`: best-so-far curves with confidence bands, PNGs (Agg);
- :mod:`evaluation.stats`: Student-t quantiles, mean with 95% CI, Welch's difference (no scipy);
- :mod:`evaluation.compare_spec`: a comparison's spec and files, shared by compare and report;
- :mod:`evaluation.retrain`, :mod:`evaluation.export`, :mod:`evaluation.ensemble`: retraining the best
  architectures, exporting one, and an ensemble of them (:mod:`evaluation.retrained` loads what they share).

The ``nas`` sub-commands over these modules live in :mod:`nas_cli.evaluation` (the command line sits above
every package).

Every number in a report is recomputed from the run directories (``config.json`` + ``store.sqlite``).
"""
