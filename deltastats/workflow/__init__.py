"""Experiments end to end: TOML configs, one run, parameter sweeps, Monte Carlo beside theory,
figures and reports.

- :mod:`~deltastats.workflow.config` — :class:`Experiment`, the frozen record of one run;
- :mod:`~deltastats.workflow.runner` — :func:`run_experiment` (estimates, theory, comparison);
- :mod:`~deltastats.workflow.sweeps` — :func:`run_sweep` (checkpointed, resumable, parallel);
- :mod:`~deltastats.workflow.points` — a sweep's worker, its point records, killed workers;
- :mod:`~deltastats.workflow.folder` — the output folder's lock, checksums, temporaries;
- :mod:`~deltastats.workflow.compare` — :func:`compare`, verdicts with multiple-testing control;
- :mod:`~deltastats.workflow.plots`, :mod:`~deltastats.workflow.report` — figures and reports;
- :mod:`~deltastats.workflow.metadata` — config, seeds and versions of every results file.

Submodules are imported on first use (plots and reports pull in matplotlib).
"""
